"""A linear layer plus each row's own LoRA update, forward and backward in one autograd
Function, as `AdapterSlots` computes an adapted layer:

    y[row] = x[row] W^T + bias + (x'[row] A_row) B_row      (x' = x, or x after dropout)

Left to autograd, the base layer and the update are separate nodes: the gradient of x is
computed twice (once through W, once through the update) and summed by one more kernel over
an activation-sized tensor, and the transposed slot weights are copied to contiguous memory
first. Here, when x' is x, the update's share is added into the base gradient by the same
kernel that computes it (`baddbmm_`), and the transposes are read in place. On a small model
these activation-sized sums were a large part of a slot-training step's GPU time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def base_weight(base: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`base`'s weight as [out, in] and its bias: an `nn.Linear`, or transformers' `Conv1D`
    (GPT-2's layers, weight stored as [in, out])."""
    if isinstance(base, nn.Linear):
        return base.weight, base.bias
    if type(base).__name__ == "Conv1D" and getattr(base, "weight", None) is not None:
        return base.weight.t(), base.bias
    raise ValueError(f"adapter slots train LoRA on linear layers; {type(base).__name__} is not one")


class SlotLinear(torch.autograd.Function):
    """Inputs: x [rows, tokens, in], x_lora (x after dropout, or None for x itself), the
    base weight [out, in] and bias, each row's A [rows, in, rank] and B [rows, rank, out]
    (scaling included). Output [rows, tokens, out]."""

    @staticmethod
    def forward(ctx, x, x_lora, weight, bias, a, b):
        ctx.shared = x_lora is None
        xa = torch.bmm(x if ctx.shared else x_lora, a)
        ctx.save_for_backward(x, None if ctx.shared else x_lora, weight, a, b, xa)
        return F.linear(x, weight, bias).baddbmm_(xa, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, x_lora, weight, a, b, xa = ctx.saved_tensors
        x_lora = x if ctx.shared else x_lora
        need_x, need_x_lora, need_weight, need_bias, need_a, need_b = ctx.needs_input_grad
        grad_x = grad_x_lora = grad_weight = grad_bias = grad_a = grad_b = None
        grad_xa = torch.bmm(grad_y, b.transpose(1, 2))  # [rows, tokens, rank]
        if need_x:
            grad_x = torch.matmul(grad_y, weight)
            if ctx.shared:
                grad_x.baddbmm_(grad_xa, a.transpose(1, 2))
        if need_x_lora and not ctx.shared:
            grad_x_lora = torch.bmm(grad_xa, a.transpose(1, 2))
        if need_weight:
            grad_weight = grad_y.flatten(0, -2).t() @ x.flatten(0, -2)
        if need_bias:
            grad_bias = grad_y.flatten(0, -2).sum(dim=0)
        if need_a:
            grad_a = torch.bmm(x_lora.transpose(1, 2), grad_xa)
        if need_b:
            grad_b = torch.bmm(xa.transpose(1, 2), grad_y)
        return grad_x, grad_x_lora, grad_weight, grad_bias, grad_a, grad_b


class LoraLinear(torch.autograd.Function):
    """One adapter shared by every row: y = x W^T + bias + (x' A) B, with x [..., in],
    x_lora (x after dropout, or None for x itself: torch.compile cannot trace a Function
    given the same tensor twice), A [in, rank] and B [rank, out] (scaling included) in x's
    dtype. As in `SlotLinear`, the update's share of x's gradient is added by the kernel
    that computes it."""

    @staticmethod
    def forward(ctx, x, x_lora, weight, bias, a, b):
        ctx.shared = x_lora is None
        ctx.input_shape = x.shape
        flat = x.reshape(-1, x.shape[-1])
        flat_lora = flat if ctx.shared else x_lora.reshape(flat.shape)
        xa = flat_lora @ a
        ctx.save_for_backward(flat, None if ctx.shared else flat_lora, weight, a, b, xa)
        # The (memory-bound) low-rank product first, then the base product accumulates into
        # it: the large GEMM reads the update in its epilogue, where adding it after would
        # read and write the whole output once more.
        update = xa @ b if bias is None else torch.addmm(bias, xa, b)
        y = update.addmm_(flat, weight.t())
        return y.view(*x.shape[:-1], b.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, x_lora, weight, a, b, xa = ctx.saved_tensors
        x_lora = x if ctx.shared else x_lora
        need_x, need_x_lora, need_weight, need_bias, need_a, need_b = ctx.needs_input_grad
        grad_x = grad_x_lora = grad_weight = grad_bias = grad_a = grad_b = None
        grad_y = grad_y.reshape(-1, grad_y.shape[-1])
        grad_xa = grad_y @ b.t()  # [tokens, rank]
        if need_x and ctx.shared:  # x's gradient through both branches, in one buffer
            grad_x = (grad_xa @ a.t()).addmm_(grad_y, weight).view(ctx.input_shape)
        elif need_x:
            grad_x = (grad_y @ weight).view(ctx.input_shape)
        if need_x_lora and not ctx.shared:
            grad_x_lora = (grad_xa @ a.t()).view(ctx.input_shape)
        if need_weight:
            grad_weight = grad_y.t() @ x
        if need_bias:
            grad_bias = grad_y.sum(dim=0)
        if need_a:
            grad_a = x_lora.t() @ grad_xa
        if need_b:
            grad_b = xa.t() @ grad_y
        return grad_x, grad_x_lora, grad_weight, grad_bias, grad_a, grad_b
