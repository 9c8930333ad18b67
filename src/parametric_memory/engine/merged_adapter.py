"""Answering with the adapter folded into the base weights: W + scaling * B A, computed once
per batch of questions, instead of the LoRA branch's extra kernels in every layer at every
decode step. The base weights are saved first and copied back afterwards, bit for bit
(peft's `unmerge` subtracts the update again, which in bfloat16 leaves rounding behind and
would drift the base model over many questions). The saved copy stays on the device: kept
in host memory, copying it back made a merged answer slower than the LoRA branch, while on
the device it costs only the adapted layers' weights in GPU memory while answering
(measured: see benchmarks/RESULTS.md).

`answering_weights` merges on CUDA only. There the LoRA branch's extra kernels in every
layer leave a small model's graphed decode step far slower than the plain model's, which is
what merged weights decode at. On a CPU the step is bound by arithmetic, the branch costs
little, and merging and restoring cost about what they save over a short answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from torch import nn

from .generation import adapter_disabled

_MAX_SAVED_BYTES = 2 << 30
"""Most base-weight bytes copied aside on the device to merge (the default model's adapted
layers: 0.2 GB in bfloat16); a larger model answers through the unmerged branch instead."""


def answering_weights(model: nn.Module, merge: bool) -> contextlib.AbstractContextManager:
    """The weights the engine answers with: `merged_adapter` where the backend merges
    (`Backend.merged_answers`), the LoRA branch as it is elsewhere."""
    return merged_adapter(model) if merge else contextlib.nullcontext()


@contextlib.contextmanager
def merged_adapter(model: nn.Module) -> Iterator[None]:
    """Inside, `model` computes with its active LoRA adapter folded into its base weights (and
    the LoRA branch switched off); outside, it is exactly as before. Where merging does not
    apply (no adapter, adapter off, several adapters, DoRA, non-linear layers, training, or too
    large) the model is used as it is."""
    layers = _mergeable_layers(model)
    if not layers:
        yield
        return
    saved = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    try:
        with torch.no_grad():
            for layer in layers:
                weight = layer.get_base_layer().weight
                delta = layer.get_delta_weight(layer.active_adapters[0])
                weight.copy_((weight.float() + delta.float()).to(weight.dtype))
        with adapter_disabled(model):
            yield
    finally:
        with torch.no_grad():
            for layer, original in zip(layers, saved, strict=True):
                layer.get_base_layer().weight.copy_(original)


def _mergeable_layers(model: nn.Module) -> list[LoraLinear]:
    if model.training:
        return []
    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    if not layers or not all(_mergeable(layer) for layer in layers):
        return []
    saved_bytes = sum(
        layer.get_base_layer().weight.numel() * layer.get_base_layer().weight.element_size()
        for layer in layers
    )
    return layers if saved_bytes <= _MAX_SAVED_BYTES else []


def _mergeable(layer: LoraLayer) -> bool:
    adapters = list(layer.active_adapters)
    return (
        isinstance(layer, LoraLinear)
        and not layer.merged
        and not layer.disable_adapters
        and len(adapters) == 1
        and adapters[0] in layer.lora_A
        and not layer.use_dora.get(adapters[0], False)
    )
