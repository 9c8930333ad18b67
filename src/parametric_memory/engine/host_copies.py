"""Copies from host to GPU that do not wait for the GPU. A plain copy of pageable host memory
(`tensor.to("cuda")`, `torch.tensor(values, device="cuda")`) synchronises the stream: the
host stops until every kernel queued before it has run, so it cannot queue the next pass
while the GPU computes this one. Staged through pinned memory, the copy is queued like a
kernel."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` (on the host) on `device`, without a stream sync on CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def copy_into(target: torch.Tensor, source: torch.Tensor) -> None:
    """Copy host `source` into `target` (a static buffer), without a stream sync on CUDA."""
    target.copy_(source.pin_memory() if target.is_cuda else source, non_blocking=True)
