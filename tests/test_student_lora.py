"""lora_in_activation_dtype: a bfloat16 model's float32 LoRA adapter computed in bfloat16
gives peft's logits and gradients up to bfloat16 rounding; peft's own forward is kept where
it already computes in the activations' dtype, or computes something else."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from parametric_memory.engine import slot_linear
from parametric_memory.engine.student_lora import lora_in_activation_dtype

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def student(dtype: torch.dtype, dropout: float = 0.0):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config).to(dtype).requires_grad_(False)
    lora = LoraConfig(
        r=4, target_modules=PROJECTIONS, lora_dropout=dropout, init_lora_weights=False
    )
    model = get_peft_model(model, lora)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()  # float32 master weights, as the engine
    return model.train()


def logits_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    logits.float().square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach().float(), grads


def count_calls(monkeypatch) -> list[int]:
    calls = [0]
    apply = slot_linear.LoraLinear.apply

    def counted(*args):
        calls[0] += 1
        return apply(*args)

    monkeypatch.setattr(slot_linear.LoraLinear, "apply", counted)
    return calls


def test_bfloat16_activations_give_peft_logits_and_gradients(monkeypatch):
    model = student(torch.bfloat16)
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(1))
    logits, grads = logits_and_grads(model, ids)
    calls = count_calls(monkeypatch)
    with lora_in_activation_dtype(model):
        fast_logits, fast_grads = logits_and_grads(model, ids)
    assert calls[0] == 2 * len(PROJECTIONS)
    assert all(grad.dtype == torch.float32 for grad in fast_grads.values())
    torch.testing.assert_close(fast_logits, logits, rtol=0.05, atol=0.05)
    for name, grad in grads.items():
        error = (fast_grads[name] - grad).norm() / grad.norm()
        assert error < 0.05, name
    assert all("forward" not in vars(m) for m in model.modules())  # peft's forward again


def test_float32_activations_and_disabled_adapters_keep_peft_forward(monkeypatch):
    model = student(torch.float32)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(2))
    logits, _ = logits_and_grads(model, ids)
    calls = count_calls(monkeypatch)
    with lora_in_activation_dtype(model):
        same, _ = logits_and_grads(model, ids)
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert calls[0] == 0
    assert torch.equal(same, logits)
    with model.disable_adapter():
        assert torch.equal(plain, model(input_ids=ids).logits)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_dropout_applies_only_in_training(monkeypatch, dropout):
    model = student(torch.bfloat16, dropout=dropout).eval()
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), lora_in_activation_dtype(model):
        first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
        model.train()
        trained = [model(input_ids=ids).logits for _ in range(2)]
    assert torch.equal(first, second)
    assert torch.equal(*trained) == (dropout == 0.0)
