"""Each row of a batch answered with its own weighted sum of saved LoRA adapters.

A question may draw on several shards (top-k composition): its row computes

    y[row] = W x[row] + sum_i w_i * scaling * (x[row] A_i) B_i

over the shards i chosen for it. The sum is one LoRA update of rank k * r, with A the
shards' A side by side and B their weighted B stacked, so each adapted layer computes it
with `slot_linear.SlotLinear` (a batched matmul per layer) however many shards the rows
use. Rows of different shards share one batch: nothing is merged into the base weights.

Saved adapters live in an `AdapterBank` on the model's device (disk to device, least
recently used out), one tensor per adapted layer with a slot per adapter, so a batch's
updates are gathered on the device in a few kernels per layer, not copied row by row. The
per-row updates are written into buffers kept for each batch shape: a decode step captured
in a CUDA graph with one batch reads the next batch's updates from the same memory
(`graph_key` tells the fast decoder so).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from .slot_linear import SlotLinear, base_weight

_ADAPTER = "default"
_EMPTY = 0
"""The bank's slot of zeros: what a row with fewer adapters than the batch's widest gets."""
_SHAPES_KEPT = 2
_LOADED_TOGETHER = 64
"""Adapters read from disk and written into the bank in one go (their states held at once
in host memory)."""
"""Batch shapes (rows, adapters a row) whose buffers the bank keeps."""

WeightedKeys = Sequence[tuple[Hashable, float]]
"""One row's adapters: each the key its bank loads it by, with the weight of its update."""


class AdapterBank:
    """Saved adapters of `model`'s shape (a peft model with one LoRA adapter) on its device,
    at most `budget` bytes of them, loaded by key with `load` (a state dict with peft's keys,
    as a saved adapter file holds them) when first used."""

    def __init__(
        self, model: nn.Module, load: Callable[[Hashable], Mapping[str, torch.Tensor]], budget: int
    ) -> None:
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        if not named:
            raise ValueError("the model has no LoRA adapter to compose")
        self._load = load
        self._dtype = model.get_input_embeddings().weight.dtype
        self._layers = [_BankLayer.of(name, layer) for name, layer in named]
        per_adapter = sum(layer.numel for layer in self._layers) * _itemsize(self._dtype)
        self.slots = max(1, budget // per_adapter)
        """The most adapters it holds."""
        self._allocated = 0
        self._a: list[torch.Tensor] = []
        self._b: list[torch.Tensor] = []
        self._slot_of: OrderedDict[Hashable, int] = OrderedDict()
        self._buffers: OrderedDict[tuple[int, int], _RowBuffers] = OrderedDict()

    @contextlib.contextmanager
    def attached(self, rows: Sequence[WeightedKeys], capacity: int = 0) -> Iterator[None]:
        """Inside, each adapted layer computes its base output plus each row's weighted sum
        (the layer's own adapter is not used) for up to `capacity` rows (at least
        len(rows); rows past len(rows) get no update); outside, the layers are as before."""
        if not rows:
            raise ValueError("no rows to compose adapters for")
        if any("forward" in vars(layer.module) for layer in self._layers):
            raise RuntimeError("the LoRA layers already compute with another forward")
        buffers = self._filled(rows, max(capacity, len(rows)))
        for layer, a, b in zip(self._layers, buffers.a, buffers.b, strict=True):
            layer.module.forward = _row_forward(layer.module, a, b)
        try:
            yield
        finally:
            for layer in self._layers:
                del layer.module.forward  # the class's forward again

    def _filled(self, rows: Sequence[WeightedKeys], capacity: int) -> _RowBuffers:
        width = max(1, max(len(row) for row in rows))
        slots, weights = self._slots(rows, capacity, width)
        if not self._a:  # no adapter loaded yet: the empty slot alone
            self._grow(0)
        buffers = self._buffers_for(capacity, width)
        for a, b, bank_a, bank_b in zip(buffers.a, buffers.b, self._a, self._b, strict=True):
            _, inputs, _ = a.shape
            gathered = bank_a[slots]  # [capacity, width, in, r]
            a.view(capacity, inputs, width, -1).copy_(gathered.permute(0, 2, 1, 3))
            weighted = b.view(capacity, width, -1, b.shape[2])
            torch.mul(bank_b[slots], weights[..., None, None], out=weighted)
        return buffers

    def _slots(
        self, rows: Sequence[WeightedKeys], capacity: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's bank slots and weights, [capacity, width], its adapters loaded."""
        self.load(_keys(rows))
        slots = [[_EMPTY] * width for _ in range(capacity)]
        weights = [[0.0] * width for _ in range(capacity)]
        for index, row in enumerate(rows):
            for position, (key, weight) in enumerate(row):
                slots[index][position] = self._slot_of[key]
                weights[index][position] = float(weight)
        device = self._layers[0].device
        return (
            torch.tensor(slots, device=device),
            torch.tensor(weights, dtype=self._dtype, device=device),
        )

    def load(self, keys: Sequence[Hashable]) -> None:
        """Bring `keys` into the bank (least recently used out, none of `keys`)."""
        keys = list(dict.fromkeys(keys))
        if len(keys) > self.slots:
            raise ValueError(f"{len(keys)} adapters at once; the bank holds {self.slots}")
        missing = [key for key in keys if key not in self._slot_of]
        for key in keys:
            if key in self._slot_of:
                self._slot_of.move_to_end(key)
        free = self._free_slots(len(missing))
        for start in range(0, len(missing), _LOADED_TOGETHER):
            end = start + _LOADED_TOGETHER
            group, slots = missing[start:end], free[start:end]
            self._store([self._load(key) for key in group], slots)
            self._slot_of.update(zip(group, slots, strict=True))

    def _free_slots(self, count: int) -> list[int]:
        """`count` slots to load into: unused ones, the bank grown (up to `slots`), then the
        least recently used ones."""
        used = set(self._slot_of.values())
        free = [slot for slot in range(1, self._allocated + 1) if slot not in used][:count]
        if len(free) < count and self._allocated < self.slots:
            wanted = max(2 * self._allocated, self._allocated + count - len(free))
            self._grow(min(self.slots, wanted))
            return self._free_slots(count)
        while len(free) < count:
            _, slot = self._slot_of.popitem(last=False)
            free.append(slot)
        return free

    def _grow(self, slots: int) -> None:
        """Room for `slots` adapters (and the empty slot), those held kept."""
        grown = [layer.bank(slots + 1, self._dtype) for layer in self._layers]
        grown_a, grown_b = [a for a, _ in grown], [b for _, b in grown]
        if self._a:
            for new, held in zip(grown_a + grown_b, self._a + self._b, strict=True):
                new[: held.shape[0]].copy_(held)
        self._a, self._b, self._allocated = grown_a, grown_b, slots

    def _store(self, states: list[Mapping[str, torch.Tensor]], slots: list[int]) -> None:
        """Write `states` into `slots`, a few whole-tensor copies a layer for all of them."""
        index = torch.tensor(slots, device=self._layers[0].device)
        for layer, bank_a, bank_b in zip(self._layers, self._a, self._b, strict=True):
            a, b = layer.read(states)
            bank_a.index_copy_(0, index, a.transpose(1, 2).to(bank_a.dtype))
            bank_b.index_copy_(0, index, (b.transpose(1, 2) * layer.scaling).to(bank_b.dtype))

    def _buffers_for(self, capacity: int, width: int) -> _RowBuffers:
        key = (capacity, width)
        if key in self._buffers:
            self._buffers.move_to_end(key)
            return self._buffers[key]
        while len(self._buffers) >= _SHAPES_KEPT:
            self._buffers.popitem(last=False)
        shaped = [layer.bank(capacity, self._dtype, width) for layer in self._layers]
        buffers = _RowBuffers([a for a, _ in shaped], [b for _, b in shaped])
        self._buffers[key] = buffers
        return buffers


@dataclass(frozen=True)
class RowChoices:
    """Each row's adapters (keys of `bank`, weighted) for a batch generation."""

    bank: AdapterBank
    rows: Sequence[WeightedKeys]

    def attached(self, indices: Sequence[int], capacity: int = 0):
        """`bank.attached` for the rows at `indices`, in that order."""
        return self.bank.attached([self.rows[i] for i in indices], capacity)

    @property
    def rows_at_once(self) -> int:
        """The most rows one batch may hold: all their adapters must fit in the bank."""
        widest = max((len(row) for row in self.rows), default=1)
        return max(1, self.bank.slots // max(1, widest))

    def loaded(self) -> RowChoices:
        """These choices, every row's adapters read into the bank now (their read errors
        raised here, not once generation starts)."""
        self.bank.load(_keys(self.rows))
        return self


@dataclass(frozen=True)
class _RowBuffers:
    a: list[torch.Tensor]
    """Per layer [capacity, in, width * r]: each row's A side by side."""
    b: list[torch.Tensor]
    """Per layer [capacity, width * r, out]: each row's B, scaled and weighted, stacked."""


@dataclass(frozen=True)
class _BankLayer:
    module: LoraLayer
    key_a: str
    key_b: str
    inputs: int
    rank: int
    outputs: int
    scaling: float
    device: torch.device

    @staticmethod
    def of(name: str, module: LoraLayer) -> _BankLayer:
        own_a, own_b = module.lora_A[_ADAPTER].weight, module.lora_B[_ADAPTER].weight
        rank, inputs = own_a.shape
        return _BankLayer(
            module,
            f"{name}.lora_A.weight",
            f"{name}.lora_B.weight",
            inputs,
            rank,
            own_b.shape[0],
            float(module.scaling[_ADAPTER]),
            own_a.device,
        )

    @property
    def numel(self) -> int:
        return self.rank * (self.inputs + self.outputs)

    def bank(
        self, rows: int, dtype: torch.dtype, width: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeros for `rows` A [in, width * r] and B [width * r, out]."""
        rank = width * self.rank
        return (
            torch.zeros((rows, self.inputs, rank), dtype=dtype, device=self.device),
            torch.zeros((rows, rank, self.outputs), dtype=dtype, device=self.device),
        )

    def read(
        self, states: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's A [n, r, in] and B [n, out, r] of saved adapters, in float32 here
        (stacked on the host, then one copy to the device each)."""
        if any(self.key_a not in state or self.key_b not in state for state in states):
            raise KeyError(f"an adapter lacks {self.key_a} or {self.key_b}")
        a = _stacked([state[self.key_a] for state in states], (self.rank, self.inputs))
        b = _stacked([state[self.key_b] for state in states], (self.outputs, self.rank))
        return a.to(self.device, torch.float32), b.to(self.device, torch.float32)


def _stacked(tensors: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    if any(tuple(t.shape) != shape for t in tensors):
        raise KeyError(f"an adapter holds a tensor of another shape than the model's {shape}")
    if len({t.dtype for t in tensors}) > 1:  # shards stored in different dtypes
        tensors = [t.float() for t in tensors]
    return torch.stack(tensors)


def _row_forward(layer: LoraLayer, a: torch.Tensor, b: torch.Tensor):
    weight, bias = base_weight(layer.get_base_layer())

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = x.shape[0]
        flat = x.reshape(rows, -1, a.shape[1]).to(a.dtype)
        y = SlotLinear.apply(flat, None, weight, bias, a[:rows], b[:rows])
        return y.view(*x.shape[:-1], b.shape[2])

    # What a CUDA graph captured through this forward reads: the same buffers hold every
    # batch of this shape, so a graph captured with one batch is right for the next.
    forward.graph_key = (a.data_ptr(), tuple(a.shape), b.data_ptr(), tuple(b.shape))
    return forward


def _keys(rows: Sequence[WeightedKeys]) -> list[Hashable]:
    return [key for row in rows for key, _ in row]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
