"""The stages that right padding changed, timed on 128 squad-dev passages with the default
model: teacher targets, student perplexity, and 12 slot-training steps of the 128 documents
together, plus a kernel profile of one step. Run once with the code before (PYTHONPATH at
its src) and once with the code after, on the same machine.

    python slot_steps.py DATA OUT.json
"""

import json
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
from parametric_memory.method.distillation import (
    compute_teacher_targets,
    student_nll,
    tokenize_items,
)
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
    data, out = sys.argv[1], sys.argv[2]
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    lm.model.eval()

    def count(text):
        return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    docs = sample_documents(load_documents(data), 128, 0, 0)
    chunks = [c for d in docs for c in chunk_document(d["id"], d["id"], d["text"], 256, count)]
    elicitation = config.elicitation.model_copy(update={"generation_batch_size": 1024})
    result = {}
    with sdpa_kernel(BACKENDS):
        items = elicit_transfer_set(lm, chunks, elicitation)
        examples = tokenize_items(lm, items, {c.id: c for c in chunks})
        compute_teacher_targets(lm, examples[:64], 64, 64)  # warm-up
        _, result["teacher_s"] = timed(lambda: compute_teacher_targets(lm, examples, 64, 64))
        student_nll(lm, examples[:64], 64)
        _, result["student_nll_s"] = timed(lambda: student_nll(lm, examples, 64))
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
        rows = [(k, e) for k, plan in enumerate(plans) for e in plan[5]]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timed(lambda: step(13))
        lm.model.eval()
    print(
        prof.key_averages().table(
            sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60
        ),
        flush=True,
    )
    return {
        "slot_steps_1_12_s": seconds,
        "step5_rows": len(rows),
        "step5_passes": len(slot_training._passes(rows, 49152)),
        "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
    }


if __name__ == "__main__":
    main()
