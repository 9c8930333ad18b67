"""The student's LoRA layers computed in the activations' dtype during a training forward.

peft computes a LoRA update in its weights' dtype: with float32 adapter weights on a
bfloat16 model it casts every layer's input to float32, multiplies on CUDA cores instead of
tensor cores, and casts back; the backward does the same. For a model large enough to be
bound by arithmetic, those casts, float32 products and float32 sums take a large share of a
distillation step's GPU time. Inside `lora_in_activation_dtype`, each such layer runs
`slot_linear.LoraLinear` instead: the (small) adapter weights are cast to the activations'
dtype, the float32 weights stay the optimiser's master copy and get float32 gradients.
Layers whose adapter already has the activations' dtype (float32 on a CPU), or that peft
computes some other way (DoRA, a LoRA bias, several active adapters, a merged or disabled
adapter, a base layer that is not linear), keep peft's forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer

from .slot_linear import LoraLinear, base_weight


@contextlib.contextmanager
def lora_in_activation_dtype(model: torch.nn.Module) -> Iterator[None]:
    """Inside, `model`'s LoRA layers compute as the module docstring says."""
    replaced = []
    for layer in model.modules():
        if isinstance(layer, LoraLayer) and "forward" not in vars(layer):
            try:
                weight, bias = base_weight(layer.get_base_layer())
            except ValueError:
                continue
            layer.forward = _forward(layer, weight, bias)
            replaced.append(layer)
    try:
        yield
    finally:
        for layer in replaced:
            del layer.forward  # the class's forward again


def _forward(layer: LoraLayer, weight: torch.Tensor, bias: torch.Tensor | None):
    peft_forward = type(layer).forward.__get__(layer)

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = _single_plain_adapter(layer)
        if name is None or args or kwargs or layer.lora_A[name].weight.dtype == x.dtype:
            return peft_forward(x, *args, **kwargs)
        a = layer.lora_A[name].weight.t().to(x.dtype)
        b = (layer.lora_B[name].weight.t() * layer.scaling[name]).to(x.dtype)
        dropout = layer.lora_dropout[name]
        p = dropout.p if isinstance(dropout, torch.nn.Dropout) and layer.training else 0.0
        x_lora = F.dropout(x, p) if p else None
        return LoraLinear.apply(x, x_lora, weight, bias, a, b)

    return forward


def _single_plain_adapter(layer: LoraLayer) -> str | None:
    """The one active adapter when peft would add a plain LoRA update, else None."""
    active = list(layer.active_adapters)
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or layer.use_dora.get(name, False):
        return None
    if getattr(layer, "lora_bias", {}).get(name, False):
        return None
    return name
