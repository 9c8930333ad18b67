"""Slot-training steps and teacher passes of 128 squad-dev passages (seed 0) with the default
model, for a same-machine comparison of source trees (PYTHONPATH picks one): the teacher
targets (each batch size timed twice), 12 slot-training steps of the 128 documents together
(a step is every document's next batch), a kernel profile of one more step, the same 12
steps again, and peak memory. With NOROPE=1, the attention modules keep transformers' RoPE
(the engine swaps Liger's kernel in since 2912116; trees before that have no such swap). A
copy of ../2026-12-06-slot-linear/steps.py with that switch instead of its ROPE=1, and the
second timings.

    python steps.py DATA OUT.json [TEACHER_ROWS ...]
"""

import json
import os
import random
import sys
import time

import torch
from common import load_documents
from quality import sample_documents
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from parametric_memory import MemoryConfig
from parametric_memory.engine import slot_training
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.models import load_model
from parametric_memory.engine.slot_training import SlotAdamW, _step_losses
from parametric_memory.method.chunking import chunk_document
from parametric_memory.method.consolidate import attach_adapter
from parametric_memory.method.distillation import compute_teacher_targets, tokenize_items
from parametric_memory.method.elicit import elicit_transfer_set
from parametric_memory.schedule import training_batches

BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def timed(function):
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main():
    data, out, teacher_rows = sys.argv[1], sys.argv[2], [int(r) for r in sys.argv[3:]] or [64]
    config = MemoryConfig()
    lm = load_model(config)
    if os.environ.get("NOROPE") == "1":
        for module in lm.model.modules():
            if type(module).__name__.endswith("Attention"):
                vars(module).pop("forward", None)
    swapped = sum("forward" in vars(module) for module in lm.model.modules())
    attach_adapter(lm, config.consolidation, 0)
    lm.model.eval()

    def count(text):
        return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    docs = sample_documents(load_documents(data), 128, 0, 0)
    chunks = [c for d in docs for c in chunk_document(d["id"], d["id"], d["text"], 256, count)]
    elicitation = config.elicitation.model_copy(update={"generation_batch_size": 1024})
    result = {"norope": os.environ.get("NOROPE") == "1", "swapped_modules": swapped}
    with sdpa_kernel(BACKENDS):
        items = elicit_transfer_set(lm, chunks, elicitation)
        examples = tokenize_items(lm, items, {c.id: c for c in chunks})
        compute_teacher_targets(lm, examples[:64], 64, 64)  # warm-up
        for rows in teacher_rows:
            _, result[f"teacher_rows{rows}_s"] = timed(
                lambda rows=rows: compute_teacher_targets(lm, examples, 64, rows)
            )
            _, result[f"teacher_rows{rows}_again_s"] = timed(
                lambda rows=rows: compute_teacher_targets(lm, examples, 64, rows)
            )
        result.update(slot_steps(lm, config, examples))
    result["examples"] = len(examples)
    print(json.dumps(result), flush=True)
    with open(out, "w") as file:
        json.dump(result, file, indent=1)


def slot_steps(lm, config, examples):
    by_document = {}
    for example in examples:
        by_document.setdefault(example.item.chunk_id.rsplit("-", 1)[0], []).append(example)
    groups = list(by_document.values())
    plans = [
        training_batches(g, config.consolidation, random.Random(i)) for i, g in enumerate(groups)
    ]
    slots = AdapterSlots(lm, len(groups))
    optimizer = SlotAdamW(slots.weights)
    rate = torch.full((len(groups),), 1e-3, device="cuda")
    active = torch.ones(len(groups), dtype=torch.bool, device="cuda")

    def step(number):
        rows = [plan[number] if number < len(plan) else [] for plan in plans]
        loss = _step_losses(lm, slots, rows)
        optimizer.step(rate, active, 1.0)
        return loss

    with slots.attached():
        lm.model.train()
        step(0)
        torch.cuda.reset_peak_memory_stats()
        _, seconds = timed(lambda: [step(number) for number in range(1, 13)])
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timed(lambda: step(13))
        # The same 12 steps again: kernels compiled for new shapes in the first window
        # (Triton specialises on sizes) are not compiled twice.
        _, again = timed(lambda: [step(number) for number in range(1, 13)])
        lm.model.eval()
    print(
        prof.key_averages().table(
            sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=60
        ),
        flush=True,
    )
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    gpu_ms = sum(e.self_device_time_total for e in kernels) / 1000
    launches = sum(e.count for e in kernels)
    rows = [(k, e) for k, plan in enumerate(plans) if len(plan) > 13 for e in plan[13]]
    return {
        "slot_steps_1_12_s": seconds,
        "slot_steps_1_12_again_s": again,
        "step13_gpu_ms": gpu_ms,
        "step13_kernels": launches,
        "step13_rows": len(rows),
        "step13_passes": len(slot_training._passes(rows, 49152)),
        "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
    }


if __name__ == "__main__":
    main()
