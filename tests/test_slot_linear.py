"""SlotLinear and LoraLinear: a linear layer plus each row's own LoRA update, or one update
shared by every row, with a hand-written backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from parametric_memory.engine.slot_linear import LoraLinear, SlotLinear, base_weight

ROWS, TOKENS, IN, RANK, OUT = 3, 5, 7, 2, 4


def inputs(*, shared: bool, bias: bool, weight_grad: bool, dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)

    def random(*shape, grad=True):
        return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_(grad)

    x = random(ROWS, TOKENS, IN)
    x_lora = None if shared else random(ROWS, TOKENS, IN)
    weight = random(OUT, IN, grad=weight_grad)
    return (
        x,
        x_lora,
        weight,
        random(OUT) if bias else None,
        random(ROWS, IN, RANK),
        random(ROWS, RANK, OUT),
    )


@pytest.mark.parametrize("shared", [True, False], ids=["x", "dropout"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("weight_grad", [False, True], ids=["frozen", "trained"])
def test_gradients_match_finite_differences(shared, bias, weight_grad):
    assert torch.autograd.gradcheck(
        SlotLinear.apply, inputs(shared=shared, bias=bias, weight_grad=weight_grad)
    )


def assert_same_values_and_gradients(y, wanted, inputs) -> None:
    torch.testing.assert_close(y, wanted)
    upstream = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, upstream)
    wanted_grads = torch.autograd.grad(wanted, inputs, upstream)
    for grad, wanted_grad in zip(grads, wanted_grads, strict=True):
        torch.testing.assert_close(grad, wanted_grad)


def test_forward_and_gradients_equal_the_layer_plus_each_rows_update():
    x, x_lora, weight, bias, a, b = inputs(shared=True, bias=True, weight_grad=False)
    y = SlotLinear.apply(x, x_lora, weight, bias, a, b)
    wanted = nn.functional.linear(x, weight, bias) + torch.stack(
        [x[row] @ a[row] @ b[row] for row in range(ROWS)]
    )
    assert_same_values_and_gradients(y, wanted, (x, a, b))


def test_an_input_that_needs_no_gradient_gets_none():
    x, _, weight, bias, a, b = inputs(shared=True, bias=True, weight_grad=False)
    x = x.detach()
    y = SlotLinear.apply(x, None, weight, bias, a, b)
    y.sum().backward()
    assert x.grad is None and a.grad is not None and b.grad is not None


def test_base_weight_reads_linear_and_conv1d_and_refuses_other_layers():
    linear, conv = nn.Linear(IN, OUT), Conv1D(OUT, IN)
    assert base_weight(linear)[0] is linear.weight
    torch.testing.assert_close(base_weight(conv)[0], conv.weight.t())
    assert base_weight(conv)[0].shape == (OUT, IN)
    with pytest.raises(ValueError, match="Embedding"):
        base_weight(nn.Embedding(IN, OUT))


def shared_adapter_inputs(*, shared: bool, bias: bool, weight_grad: bool):
    x, x_lora, weight, bias_, a, b = inputs(shared=shared, bias=bias, weight_grad=weight_grad)
    a, b = a[0].detach().requires_grad_(), b[0].detach().requires_grad_()
    return x, x_lora, weight, bias_, a, b


@pytest.mark.parametrize("shared", [True, False], ids=["x", "dropout"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("weight_grad", [False, True], ids=["frozen", "trained"])
def test_shared_adapter_gradients_match_finite_differences(shared, bias, weight_grad):
    arguments = shared_adapter_inputs(shared=shared, bias=bias, weight_grad=weight_grad)
    assert torch.autograd.gradcheck(LoraLinear.apply, arguments)


def test_shared_adapter_equals_the_layer_plus_the_update():
    x, x_lora, weight, bias, a, b = shared_adapter_inputs(shared=True, bias=True, weight_grad=False)
    y = LoraLinear.apply(x, x_lora, weight, bias, a, b)
    wanted = nn.functional.linear(x, weight, bias) + x @ a @ b
    assert_same_values_and_gradients(y, wanted, (x, a, b))
