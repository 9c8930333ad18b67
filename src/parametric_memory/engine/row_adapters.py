"""Each row of a batch answered with its own weighted sum of saved LoRA adapters.

A question may draw on several shards (top-k composition): its row computes

    y[row] = W x[row] + sum_i w_i * scaling * (x[row] A_i) B_i

over the shards i chosen for it. The sum is one LoRA update of rank k * r, with A the
shards' A side by side and B their weighted B stacked, so each adapted layer computes it
with `slot_linear.SlotLinear` (a batched matmul per layer) however many shards the rows
use. Rows of different shards share one batch: nothing is merged into the base weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from .slot_linear import SlotLinear, base_weight

_ADAPTER = "default"

WeightedAdapters = Sequence[tuple[Mapping[str, torch.Tensor], float]]
"""One row's adapters: each a saved adapter's state dict (peft's keys, as its file holds
them) with the weight of its update."""


class RowAdapters:
    """Per-row adapter sums for one batch of `model` (a peft model with one LoRA adapter,
    whose shape every state dict has)."""

    def __init__(self, model: nn.Module, rows: Sequence[WeightedAdapters]) -> None:
        if not rows:
            raise ValueError("no rows to compose adapters for")
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        if not named:
            raise ValueError("the model has no LoRA adapter to compose")
        self._layers = [module for _, module in named]
        dtype = model.get_input_embeddings().weight.dtype
        width = max(1, max(len(row) for row in rows))
        self._views = [_stacked(layer, name, rows, width, dtype) for name, layer in named]

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Inside, each adapted layer computes its base output plus each row's sum (the
        layer's own adapter is not used); outside, the layers are as before."""
        if any("forward" in vars(layer) for layer in self._layers):
            raise RuntimeError("the LoRA layers already compute with another forward")
        for layer, (a, b) in zip(self._layers, self._views, strict=True):
            layer.forward = _row_forward(layer, a, b)
        try:
            yield
        finally:
            for layer in self._layers:
                del layer.forward  # the class's forward again


def _stacked(
    layer: LoraLayer, name: str, rows: Sequence[WeightedAdapters], width: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's A [rows, in, width * r] and scaled, weighted B [rows, width * r, out]; a row
    with fewer than `width` adapters (none: the base model) gets zeros for the rest."""
    key_a, key_b = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
    scaling = layer.scaling[_ADAPTER]
    own_a, own_b = layer.lora_A[_ADAPTER].weight, layer.lora_B[_ADAPTER].weight
    zero_a = torch.zeros(own_a.shape[1], own_a.shape[0], device=own_a.device)
    zero_b = torch.zeros(own_b.shape[1], own_b.shape[0], device=own_b.device)
    a_rows, b_rows = [], []
    for row in rows:
        a_parts, b_parts = [], []
        for state, weight in row:
            if key_a not in state or key_b not in state:
                raise KeyError(f"an adapter lacks {key_a} or {key_b}")
            a_parts.append(state[key_a].to(own_a.device, torch.float32).t())  # [in, r]
            b = state[key_b].to(own_b.device, torch.float32).t()  # [r, out]
            b_parts.append(b * (weight * scaling))
        a_parts += [zero_a] * (width - len(row))
        b_parts += [zero_b] * (width - len(row))
        a_rows.append(torch.cat(a_parts, dim=1))
        b_rows.append(torch.cat(b_parts, dim=0))
    return torch.stack(a_rows).to(dtype), torch.stack(b_rows).to(dtype)


def _row_forward(layer: LoraLayer, a: torch.Tensor, b: torch.Tensor):
    weight, bias = base_weight(layer.get_base_layer())

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = x.reshape(a.shape[0], -1, a.shape[1]).to(a.dtype)
        return SlotLinear.apply(rows, None, weight, bias, a, b).view(*x.shape[:-1], b.shape[2])

    return forward
