"""Liger's fused RMSNorm, SwiGLU and RoPE compute what transformers' modules compute, forward
and backward through LoRA layers; they are used only on CUDA and can be switched off."""

from __future__ import annotations

import sys
from types import MethodType

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_consolidate import CUDA
from transformers import LlamaConfig, LlamaForCausalLM

from parametric_memory import MemoryConfig
from parametric_memory.engine import fused_kernels
from parametric_memory.engine.fused_kernels import (
    fused_kernels_available,
    transformers_own_modules,
    use_fused_kernels,
)
from parametric_memory.engine.models import load_model

LIGER = pytest.mark.skipif(not fused_kernels_available(), reason="liger-kernel not installed")


def small_llama(device: str, dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


def with_lora(model: LlamaForCausalLM):
    lora = LoraConfig(r=4, target_modules=["q_proj", "k_proj", "gate_proj", "up_proj", "down_proj"])
    student = get_peft_model(model, lora)
    for name, parameter in student.named_parameters():
        if "lora_B" in name:  # non-zero, so the LoRA path changes the output
            torch.nn.init.normal_(parameter, std=0.05)
    return student


def test_nothing_changes_on_cpu():
    model = small_llama("cpu")
    forwards = [module.forward for module in model.modules()]
    assert use_fused_kernels(model) == 0
    assert [module.forward for module in model.modules()] == forwards


def test_a_cpu_model_loads_with_transformers_own_modules(tiny_config):
    lm = load_model(MemoryConfig(**{**tiny_config.model_dump(), "device": "cpu"}))
    assert all("forward" not in vars(module) for module in lm.model.modules())


@CUDA
@LIGER
def test_fused_modules_give_the_same_logits_and_lora_gradients():
    reference = with_lora(small_llama("cuda"))
    fused = with_lora(small_llama("cuda"))
    fused.load_state_dict(reference.state_dict())
    swapped = use_fused_kernels(fused.get_base_model())
    assert swapped == 2 * 4 + 1  # two norms, an MLP, an attention a layer, the final norm
    ids = torch.randint(0, 256, (3, 17), device="cuda")
    outputs = []
    for model in (reference, fused):
        model.train()
        logits = model(input_ids=ids).logits
        logits.float().square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        outputs.append((logits.detach(), grads))
    (logits, grads), (fused_logits, fused_grads) = outputs
    torch.testing.assert_close(fused_logits, logits, rtol=1e-4, atol=1e-4)
    assert grads.keys() == fused_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-3, atol=1e-5)


@CUDA
@LIGER
def test_the_switch_keeps_transformers_modules(tiny_config):
    engine = {"device": "cuda", "engine": {"fused_kernels": False}}
    lm = load_model(MemoryConfig(**{**tiny_config.model_dump(), **engine}))
    assert lm.backend.name == "cuda"
    assert not any("forward" in vars(module) for module in lm.model.modules())


@CUDA
@LIGER
def test_a_cuda_model_loads_with_fused_modules(tiny_config):
    lm = load_model(MemoryConfig(**{**tiny_config.model_dump(), "device": "cuda"}))
    assert sum("forward" in vars(module) for module in lm.model.modules()) == 9


def test_transformers_own_modules_inside_and_the_swapped_ones_after():
    """With stand-ins for Liger's functions (any device): the swapped forwards are taken
    out inside the block, put back after, and other instance forwards are left alone."""
    model = small_llama("cpu")
    layer = model.model.layers[0]
    norm = MethodType(fused_kernels._rms_norm_forward(lambda x, w, eps: x), layer.input_layernorm)
    mlp = MethodType(fused_kernels._mlp_forward(lambda gate, up: gate), layer.mlp)
    layer.input_layernorm.forward, layer.mlp.forward = norm, mlp
    other = layer.self_attn.forward = MethodType(type(layer.self_attn).forward, layer.self_attn)
    with transformers_own_modules(model):
        assert "forward" not in vars(layer.input_layernorm) and "forward" not in vars(layer.mlp)
        assert vars(layer.self_attn)["forward"] is other
    assert layer.input_layernorm.forward is norm and layer.mlp.forward is mlp


def test_the_rotary_kernel_runs_in_its_attention_modules_only():
    """With a stand-in kernel on the CPU: each swapped attention module calls it once per
    forward, on the rows laid end to end as one sequence, the logits are transformers' own,
    and the modeling file's function is transformers' again after the call and inside
    `transformers_own_modules`."""
    model, reference = small_llama("cpu"), small_llama("cpu")
    modeling = sys.modules[type(model.model.layers[0].self_attn).__module__]
    original = modeling.apply_rotary_pos_emb
    calls = []

    def kernel(q, k, cos, sin):
        calls.append((modeling.apply_rotary_pos_emb is not original, q.shape[0], k.shape[2]))
        return original(q, k, cos, sin)

    for layer in model.model.layers:
        rotary = fused_kernels._rows_as_one_sequence(kernel)
        forward = fused_kernels._attention_forward(rotary, kernel_device="cpu")
        layer.self_attn.forward = MethodType(forward, layer.self_attn)
    ids = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert calls == [(True, 1, 2 * 9)] * 2
    assert modeling.apply_rotary_pos_emb is original
    reference(input_ids=ids)  # an unswapped model never meets the kernel
    assert len(calls) == 2
    with transformers_own_modules(model):
        assert all("forward" not in vars(layer.self_attn) for layer in model.model.layers)
        model(input_ids=ids)
    assert len(calls) == 2 and "forward" in vars(model.model.layers[0].self_attn)


def test_the_rotary_kernel_leaves_other_devices_tensors_to_transformers():
    model, reference = small_llama("cpu"), small_llama("cpu")
    attention = model.model.layers[0].self_attn

    def kernel(q, k, cos, sin):
        raise AssertionError("the kernel met a tensor of another device")

    attention.forward = MethodType(fused_kernels._attention_forward(kernel), attention)
    ids = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
