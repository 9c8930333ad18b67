"""The engine's backends, chosen once when a model loads, by capability (as peft dispatches
LoRA layers: the first backend that can take the device wins, the reference last). Method and
product code read the chosen backend's flags (`lm.backend`) instead of checking the device.

- reference: plain transformers + peft, the readable version of every step; any device.
- cuda: the same computations through CUDA graphs, fused kernels, merged adapters and
  stacked adapter slots (many documents' adapters trained in one batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import EngineConfig
from ..errors import ModelLoadError


@dataclass(frozen=True)
class Backend:
    name: str
    graphed_training: bool
    """Distillation steps replayed from CUDA graphs (`fast_distillation.graphed_trainer`)."""
    fast_decode: bool
    """Greedy decoding from a static KV cache in a CUDA graph (`fast_generation`)."""
    merged_answers: bool
    """Answers computed with the adapter merged into the base weights (`merged_adapter`)."""
    fused_kernels: bool
    """Liger's fused RMSNorm, SwiGLU and RoPE swapped into the model (`fused_kernels`)."""
    teacher_shares_chunk_cache: bool
    """Teacher passes reuse one KV cache of a chunk for all its items. Where a step is bound
    by launches rather than arithmetic (CUDA) one padded pass over whole rows is faster."""
    documents_together: int
    """Fresh one-document shards consolidated at once in stacked adapter slots, unless
    `ShardingConfig.shards_in_parallel` says otherwise. A small model's GPU step is bound by
    the host, so many documents cost little more than one; a CPU step is bound by arithmetic,
    so documents go one at a time."""


def _cuda(device: torch.device, config: EngineConfig) -> Backend | None:
    if device.type != "cuda" or config.backend == "reference":
        return None
    return Backend(
        name="cuda",
        graphed_training=config.graphed_training,
        fast_decode=config.fast_decode,
        merged_answers=config.merged_answers,
        fused_kernels=config.fused_kernels,
        teacher_shares_chunk_cache=False,
        documents_together=128,
    )


def _reference(device: torch.device, config: EngineConfig) -> Backend | None:
    if config.backend == "cuda":
        return None
    return Backend(
        name="reference",
        graphed_training=False,
        fast_decode=False,
        merged_answers=False,
        fused_kernels=False,
        teacher_shares_chunk_cache=True,
        documents_together=1,
    )


_BACKENDS: tuple[Callable[[torch.device, EngineConfig], Backend | None], ...] = (
    _cuda,
    _reference,
)
"""Tried in order; the first that can take the device is used."""


def choose_backend(device: torch.device, config: EngineConfig | None = None) -> Backend:
    config = config or EngineConfig()
    for candidate in _BACKENDS:
        backend = candidate(device, config)
        if backend is not None:
            return backend
    raise ModelLoadError(
        f'engine.backend={config.backend!r} cannot run on device {device}; use "auto"'
    )
