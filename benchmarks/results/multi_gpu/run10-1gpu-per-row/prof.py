"""Time one group of 32 squad-dev passages through transform_fresh_documents' stages, then
slot steps of its 32 documents, two of them under torch.profiler (run from benchmarks/, data
path as argument). Tidied for the repository after the run: same stages and calls."""

import random
import statistics
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
from parametric_memory.engine.generation import adapter_disabled
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


class Timed:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        torch.cuda.synchronize()
        self.start = time.perf_counter()

    def __exit__(self, *_):
        torch.cuda.synchronize()
        print(f"{self.name}: {time.perf_counter() - self.start:.3f}s", flush=True)


def main() -> None:
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)

    def count(text: str) -> int:
        return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    documents = sample_documents(load_documents(sys.argv[1]), 32, 0, 0)
    chunks = [c for d in documents for c in chunk_document(d["id"], d["id"], d["text"], 256, count)]
    elicitation = config.elicitation.model_copy(update={"generation_batch_size": 512})
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(backends):
        with Timed("elicit"):
            items = elicit_transfer_set(lm, chunks, elicitation)
        with Timed("tokenize"):
            examples = tokenize_items(lm, items, {c.id: c for c in chunks})
        with Timed("teacher"):
            compute_teacher_targets(lm, examples, 64, 64)
        with adapter_disabled(lm.model), Timed("student_nll"):
            student_nll(lm, examples, 64)
        _time_steps(lm, config, examples)


def _time_steps(lm, config, examples) -> None:
    by_document: dict[str, list] = {}
    for example in examples:
        by_document.setdefault(example.item.chunk_id.rsplit("-", 1)[0], []).append(example)
    groups = list(by_document.values())
    lengths = [len(e.student_ids) for e in examples]
    print("docs", len(groups), "items", len(examples), "mean student len", statistics.mean(lengths))
    print("max", max(lengths), "mean answer", statistics.mean(e.answer_len for e in examples))
    plans = [
        training_batches(g, config.consolidation, random.Random(i)) for i, g in enumerate(groups)
    ]
    print("steps per slot", [len(plan) for plan in plans])
    slots = AdapterSlots(lm, len(groups))
    optimizer = SlotAdamW(slots.weights)
    rate = torch.full((len(groups),), 1e-3, device="cuda")
    active = torch.ones(len(groups), dtype=torch.bool, device="cuda")

    def step(index: int) -> None:
        _step_losses(lm, slots, [plan[index] if index < len(plan) else [] for plan in plans])
        optimizer.step(rate, active, 1.0)

    with slots.attached():
        lm.model.train()
        step(0)
        for index in range(1, 5):
            rows = [(k, e) for k, plan in enumerate(plans) for e in plan[index]]
            passes = len(slot_training._passes(rows, 49152))
            tokens = sum(len(e.student_ids) for _, e in rows)
            with Timed(f"step {index} passes {passes} rows {len(rows)} real tokens {tokens}"):
                step(index)
        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiled:
            step(5)
            step(6)
            torch.cuda.synchronize()
        print(f"profiled 2 steps wall {time.perf_counter() - started:.3f}s", flush=True)
        table = profiled.key_averages().table(sort_by="self_cuda_time_total", row_limit=22)
        print(table, flush=True)
        with Timed("all remaining steps"):
            for index in range(7, max(len(plan) for plan in plans)):
                step(index)
        lm.model.eval()
    print("peak GB", torch.cuda.max_memory_allocated() / 1e9, flush=True)


if __name__ == "__main__":
    main()
