"""Probe: 128-document slot-training steps with the pass eager (`slot_training._row_kl_sums`)
against the same pass under `torch.compile(dynamic=True)`: random weights of the default
model's shape, 8 random rows a document of 40-250 tokens, answers up to 64, top-64 targets.
On the CPU a tiny shape checks that the compiled pass traces without graph breaks and gives
the eager weights.

    MODE=both|eager|compiled LIGER=0|1 PROFILE=0|1 PYTHONPATH=src \
        python compile_probe.py tiny|smol [STEPS]
"""

import os
import random
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from parametric_memory.config import ConsolidationConfig
from parametric_memory.engine import slot_training
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.fast_distillation import collate
from parametric_memory.engine.fused_kernels import use_fused_kernels
from parametric_memory.engine.models import LoadedModel
from parametric_memory.losses import topk_kl_per_token
from parametric_memory.method.consolidate import attach_adapter
from parametric_memory.records import Example, TransferItem

SHAPES = {
    "tiny": (
        {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2},
        {"slots": 4, "rows": 3, "shortest": 6, "longest": 40, "k": 8},
    ),
    "smol": (
        {
            "vocab_size": 49152,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "rms_norm_eps": 1e-5,
        },
        {"slots": 128, "rows": 8, "shortest": 40, "longest": 250, "k": 64},
    ),
}
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def build(shape: str) -> tuple[LoadedModel, dict]:
    sizes, rows = SHAPES[shape]
    config = LlamaConfig(
        num_attention_heads=9 if shape == "smol" else 4,
        num_key_value_heads=3 if shape == "smol" else 2,
        tie_word_embeddings=True,
        **sizes,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(DEVICE, torch.bfloat16 if CUDA else torch.float32)
    if os.environ.get("LIGER") == "1":
        print("Liger modules", use_fused_kernels(model))
    lm = LoadedModel(model, type("Tokenizer", (), {"pad_token_id": 0})(), "probe", "probe")
    attach_adapter(lm, ConsolidationConfig(batch_size=rows["rows"]), 0)
    return lm, rows


def random_rows(count: int, seed: int, vocab: int, rows: dict) -> list[Example]:
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        length = rng.randint(rows["shortest"], rows["longest"])
        answer = rng.randint(1, min(64, length - 2))
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        example = Example(TransferItem("c", "entity", "", ""), ids, [], [], answer)
        logprobs = torch.log_softmax(torch.randn(answer, rows["k"] + 1, generator=generator), -1)
        example.topk_ids = torch.randint(0, vocab, (answer, rows["k"]), generator=generator)
        example.topk_logprobs = logprobs[:, :-1].contiguous()
        examples.append(example)
    return examples


def compiled_pass(lm: LoadedModel):
    base = lm.model.get_base_model()

    def pass_kl(input_ids, positions, topk_ids, topk_logprobs, mask):
        hidden = base.model(input_ids=input_ids).last_hidden_state
        index = positions[:, :, None].expand(-1, -1, hidden.shape[-1])
        logits = base.lm_head(hidden.gather(1, index))
        return (topk_kl_per_token(logits, topk_ids, topk_logprobs) * mask).sum(dim=1)

    compiled = torch.compile(pass_kl, dynamic=True)

    def row_kl_sums(lm_, slots, examples, slot_of_row):
        batch = collate(examples, 0, slots.weights.device)
        slots.use_rows(slot_of_row)
        return compiled(
            batch.input_ids,
            batch.answer_positions,
            batch.topk_ids,
            batch.topk_logprobs,
            batch.answer_mask,
        )

    return row_kl_sums


def run(lm: LoadedModel, steps: list, row_kl_sums) -> tuple[list[float], torch.Tensor]:
    slot_training._row_kl_sums = row_kl_sums
    slots = AdapterSlots(lm, len(steps[0]))
    optimizer = slot_training.SlotAdamW(slots.weights)
    rate = torch.full((slots.slots,), 1e-3, device=DEVICE)
    active = torch.ones(slots.slots, dtype=torch.bool, device=DEVICE)
    times = []
    with slots.attached():
        lm.model.train()
        for batches in steps:
            if CUDA:
                torch.cuda.synchronize()
            start = time.perf_counter()
            slot_training._step_losses(lm, slots, batches)
            optimizer.step(rate, active, 1.0)
            if CUDA:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        if CUDA and os.environ.get("PROFILE") == "1":
            profile_step(lm, slots, steps[-1])
    return times, slots.weights.detach().clone()


def profile_step(lm: LoadedModel, slots: AdapterSlots, batches: list) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        slot_training._step_losses(lm, slots, batches)
        torch.cuda.synchronize()
    print(trace.key_averages().table(sort_by="self_cuda_time_total", row_limit=14))


def main() -> None:
    shape, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6
    mode = os.environ.get("MODE", "both")
    lm, rows = build(shape)
    vocab = lm.model.config.vocab_size
    steps = [
        [
            random_rows(rows["rows"], 1000 * step + slot, vocab, rows)
            for slot in range(rows["slots"])
        ]
        for step in range(count)
    ]
    ways = {"eager": slot_training._row_kl_sums, "compiled": compiled_pass(lm)}
    weights = {}
    for way in ways if mode == "both" else [mode]:
        start = time.perf_counter()
        times, weights[way] = run(lm, steps, ways[way])
        steps_s = " ".join(f"{t:.3f}" for t in times)
        print(f"{way}: {time.perf_counter() - start:.1f} s in all, steps {steps_s}", flush=True)
    if len(weights) == 2:
        gap = (weights["eager"] - weights["compiled"]).abs().max().item()
        print(f"largest weight difference, eager vs compiled: {gap:.3g}")


if __name__ == "__main__":
    main()
