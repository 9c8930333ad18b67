"""Host cost of one slot-training pass on this CPU: a 30-layer Llama with 64-wide layers,
where kernels are tiny and dispatch dominates, as on a launch-bound GPU. Times a slot pass
of 8 documents x 4 rows, the same 32 rows through peft's own LoRA path, and the model with
its adapter off; counts the pass's aten ops.

    PYTHONPATH=src:tests python benchmarks/results/speed/2026-11-28-right-padding/host_proxy.py
"""

import time
from types import SimpleNamespace

import torch
from peft import LoraConfig, get_peft_model
from test_fast_generation import random_examples
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.fast_distillation import collate, student_kl_loss
from parametric_memory.engine.models import LoadedModel
from parametric_memory.engine.slot_training import _step_losses

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed(action, repeats: int = 5) -> float:
    for _ in range(2):
        action()
    start = time.perf_counter()
    for _ in range(repeats):
        action()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=500,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=30,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        pad_token_id=2,
    )
    lora = LoraConfig(r=4, target_modules=PROJECTIONS, init_lora_weights=False)
    model = get_peft_model(LlamaForCausalLM(config), lora).eval()
    lm = LoadedModel(model, SimpleNamespace(pad_token_id=2), "proxy", "proxy")
    batches = [random_examples(model, 6, seed=seed)[:4] for seed in range(8)]
    slots = AdapterSlots(lm, len(batches))

    def slot_pass() -> None:
        slots.weights.grad = None
        _step_losses(lm, slots, batches)

    with slots.attached():
        model.train()
        print(f"slot pass {timed(slot_pass):.3f} s")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            slot_pass()
    ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    print(f"aten ops in one slot pass: {ops}")
    batch = collate([e for b in batches for e in b], 2, torch.device("cpu"))
    model.train()
    print(f"peft LoRA pass {timed(lambda: student_kl_loss(model, batch).backward()):.3f} s")
    with model.disable_adapter():
        model.get_input_embeddings().weight.requires_grad_(True)  # something to backpropagate to
        print(f"no LoRA pass {timed(lambda: student_kl_loss(model, batch).backward()):.3f} s")


if __name__ == "__main__":
    main()
