"""The student's optimiser: a fused AdamW whose step skips non-finite gradients on the device,
so a bf16 overflow never writes NaN into an adapter, and whose step can be captured in a CUDA
graph (no host sync; the learning rate a device tensor)."""

from __future__ import annotations

import torch


def capturable_adamw(
    params: list[torch.nn.Parameter], lr: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW whose step can be captured: fused, state on the device, and the learning rate a
    device tensor (`set_learning_rate` fills it, so a replayed graph sees the schedule)."""
    if device.type != "cuda":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    rate = torch.tensor(lr, dtype=torch.float32, device=device)
    return torch.optim.AdamW(params, lr=rate, weight_decay=0.0, fused=True, capturable=True)


def clip_and_step(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor], max_grad_norm: float
) -> torch.Tensor:
    """Clip the gradient norm and step a fused optimizer, which skips the update on the
    device when the norm is not finite. Returns 1.0 for a skipped step, else 0.0 (a device
    tensor: no host sync, so the step can also be captured in a CUDA graph)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=params[0].is_cuda)
    optimizer.found_inf = (~torch.isfinite(norm)).float()
    optimizer.step()
    return optimizer.found_inf


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate, in place where it is a tensor (graphs read it there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


@torch.no_grad()
def reset_state(optimizer: torch.optim.Optimizer) -> None:
    """Make the optimiser as fresh as a new one (step counts and moments zero), in place:
    captured graphs hold the addresses of its state tensors."""
    for state in optimizer.state.values():
        for value in state.values():
            value.zero_()
