"""Several independent LoRA adapters in one model, trained in one batch: each row of a
batch is computed with the weights of its own slot. Used to consolidate many fresh
one-document shards at once, which on a GPU costs little more than one (a small model's step
is bound by kernel launches and memory traffic, not arithmetic).

The slots live in one [slots, n] float32 tensor, so the optimiser, clipping and checks are a
few whole-tensor operations. While attached, each adapted layer's forward is replaced by
`slot_linear.SlotLinear`, which adds each row's update to the base layer's output:

    y[row] = W x[row] + scaling * (dropout(x[row]) A_k) B_k,   k = the row's slot

which is peft's LoRA forward with slot k's weights, computed in the activations' dtype
(peft computes it in float32: for hundreds of rows its float32 copies of every layer's
input took tens of GB of a GPU). Rows of any slots can share a batch, so a step's rows are
batched by length rather than by slot. `copy_to_adapter(k)` writes slot k into the peft
adapter, so it is saved and loaded like any adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer

from .models import LoadedModel
from .slot_linear import LoraLinear, SlotLinear, base_weight

_ADAPTER = "default"


class AdapterSlots:
    """`slots` copies of `lm`'s LoRA adapter, each starting from its current weights."""

    def __init__(self, lm: LoadedModel, slots: int):
        if slots < 1:
            raise ValueError(f"need at least one adapter slot, got {slots}")
        self.model = lm.model
        self.slots = slots
        named = [(n, m) for n, m in self.model.named_modules() if isinstance(m, LoraLayer)]
        if not named:
            raise ValueError(f"{lm.name} has no LoRA adapter to copy into slots")
        self._layers = [module for _, module in named]
        self._bases = [base_weight(layer.get_base_layer()) for layer in self._layers]
        """Each layer's base weight [out, in] and bias (raises for a layer SlotLinear cannot
        compute)."""
        self._keys = [(f"{n}.lora_A.weight", f"{n}.lora_B.weight") for n, _ in named]
        """Each layer's keys in peft's saved state dict (module path, adapter name left out)."""
        self._shapes: list[tuple[int, int, int]] = []  # (in, rank, out) of each layer
        pieces, scales = [], []
        for layer in self._layers:
            a, b = _lora_weights(layer)  # [rank, in], [out, rank]
            self._shapes.append((a.shape[1], a.shape[0], b.shape[0]))
            pieces += [a.detach().t().reshape(-1), b.detach().t().reshape(-1)]
            scales += [torch.ones(a.numel()), torch.full((b.numel(),), layer.scaling[_ADAPTER])]
        initial = torch.cat(pieces).float()
        self.weights = initial.expand(slots, -1).clone().requires_grad_(True)
        """[slots, n]: per layer, A as [in, rank] then B as [rank, out], flattened."""
        self._scale = torch.cat(scales).to(initial.device)
        """[n]: 1 on A, LoRA's scaling on B, so each update is (x A)(scaling B)."""
        self._dtype = self.model.get_input_embeddings().weight.dtype
        self._sizes = [size for i, r, o in self._shapes for size in (i * r, r * o)]
        self._views: list[torch.Tensor] = []

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Inside, each adapted layer computes with the slots (see `use_rows`) instead of its
        own adapter: its forward is replaced by `SlotLinear` on the instance, and restored
        on the way out."""
        for index, layer in enumerate(self._layers):
            layer.forward = self._slot_forward(index, layer)
        try:
            yield
        finally:
            for layer in self._layers:
                del layer.forward  # the class's forward again
            self._views = []

    def use_rows(self, slot_of_row: torch.Tensor, only_slot: int | None = None) -> None:
        """Compute row i of the next forward pass with slot `slot_of_row[i]`; call once per
        pass. Every layer's per-row weights come from one gather of `weights` (cast to the
        activations' dtype before the gather, which is the smaller copy), so a pass costs a
        few kernels more than the plain model, and backward scatters every layer's gradient
        back into `weights.grad` in one piece. `only_slot`: every row is in that slot (the
        caller knows it on the host), so the rows share one copy of it instead."""
        if only_slot is None:
            rows = (self.weights * self._scale).to(self._dtype).index_select(0, slot_of_row)
        else:
            rows = (self.weights[only_slot] * self._scale).to(self._dtype)
        self._views = [view for pair in self._layer_views(rows) for view in pair]

    def _slot_forward(self, index: int, layer: LoraLayer):
        dropout = layer.lora_dropout[_ADAPTER]
        dropout_p = dropout.p if isinstance(dropout, torch.nn.Dropout) else 0.0
        weight, bias = self._bases[index]

        def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            a, b = self._views[2 * index], self._views[2 * index + 1]  # [(rows,) in/rank, ...]
            if a.dim() == 2:  # one slot for every row
                x = x.to(a.dtype)
                x_lora = F.dropout(x, dropout_p) if dropout_p and layer.training else None
                return LoraLinear.apply(x, x_lora, weight, bias, a, b)
            rows = x.reshape(a.shape[0], -1, a.shape[1]).to(a.dtype)
            rows_lora = F.dropout(rows, dropout_p) if dropout_p and layer.training else None
            y = SlotLinear.apply(rows, rows_lora, weight, bias, a, b)
            return y.view(*x.shape[:-1], b.shape[2])

        return forward

    @torch.no_grad()
    def copy_to_adapter(self, slot: int) -> None:
        """Write slot `slot`'s weights into the model's own (peft) adapter."""
        for layer, (a, b) in zip(self._layers, self._unpack(self.weights[slot]), strict=True):
            lora_a, lora_b = _lora_weights(layer)
            lora_a.copy_(a)
            lora_b.copy_(b)

    @torch.no_grad()
    def state_dict(self, slot: int) -> dict[str, torch.Tensor]:
        """Slot `slot` as peft's `get_peft_model_state_dict` gives the adapter after
        `copy_to_adapter(slot)`: the same keys and values, contiguous, on the CPU."""
        row = self.weights.detach()[slot].to("cpu")
        return {key: view.contiguous() for key, view in self._peft_views(row).items()}

    @torch.no_grad()
    def saved_rows(self, order: Sequence[str], first: int, stop: int) -> torch.Tensor:
        """[stop - first, n]: slots `first` to `stop` (not included), each as the tensors of
        its `state_dict` in `order`, flattened one after another (computed where the slots
        are)."""
        views = self._peft_views(self.weights.detach()[first:stop])
        return torch.cat([views[key].flatten(1) for key in order], dim=1)

    def _peft_views(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each tensor's key in peft's saved state dict -> its view of `rows` ([..., n])."""
        views = {}
        for (key_a, key_b), (a, b) in zip(self._keys, self._unpack(rows), strict=True):
            views[key_a], views[key_b] = a, b
        return views

    def _unpack(self, rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (lora_A [..., rank, in], lora_B [..., out, rank]) views of `rows`
        ([..., n]: one slot's row, or several)."""
        return ((a.transpose(-1, -2), b.transpose(-1, -2)) for a, b in self._layer_views(rows))

    def _layer_views(self, rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (A [..., in, rank], B [..., rank, out]) views of `rows` ([..., n]:
        one slot's row, or a row per batch row)."""
        parts = rows.split(self._sizes, dim=-1)
        for index, (fan_in, rank, fan_out) in enumerate(self._shapes):
            yield (
                parts[2 * index].unflatten(-1, (fan_in, rank)),
                parts[2 * index + 1].unflatten(-1, (rank, fan_out)),
            )

    def finite(self) -> torch.Tensor:
        """[slots] bool: whether every weight of each slot is finite."""
        return torch.isfinite(self.weights.detach()).all(dim=1)


def _lora_weights(layer: LoraLayer) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.lora_A[_ADAPTER].weight, layer.lora_B[_ADAPTER].weight
