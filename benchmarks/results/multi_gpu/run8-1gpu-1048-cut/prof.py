"""Time one group of 32 squad-dev passages through transform_fresh_documents' stages, and
the first training steps of its 32 slots (run from benchmarks/, data path as argument)."""

import random
import statistics
import sys
import time

import torch
from common import load_documents
from quality import sample_documents
from torch.nn.attention import SDPBackend, sdpa_kernel

from parametric_memory import MemoryConfig
from parametric_memory.engine import slot_training
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.models import load_model
from parametric_memory.engine.slot_training import SlotAdamW, _slot_losses
from parametric_memory.method.chunking import chunk_document
from parametric_memory.method.consolidate import attach_adapter
from parametric_memory.method.distillation import (
    compute_teacher_targets,
    student_nll,
    tokenize_items,
)
from parametric_memory.method.elicit import elicit_transfer_set
from parametric_memory.schedule import training_batches

PASS_TOKENS = 131_072


class Timed:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        torch.cuda.synchronize()
        self.start = time.perf_counter()

    def __exit__(self, *_):
        torch.cuda.synchronize()
        print(f"{self.name}: {time.perf_counter() - self.start:.2f}s", flush=True)


def main() -> None:
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    tokenizer = lm.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

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
        with Timed("student_nll"):
            student_nll(lm, examples, 64)
        _time_steps(lm, config, examples)


def _time_steps(lm, config, examples) -> None:
    by_document: dict[str, list] = {}
    for example in examples:
        by_document.setdefault(example.item.chunk_id.rsplit("-", 1)[0], []).append(example)
    groups = list(by_document.values())
    print("docs", len(groups), "items", len(examples))
    print("mean student len", statistics.mean(len(e.student_ids) for e in examples))
    print("mean answer", statistics.mean(e.answer_len for e in examples))
    slot_training._PASS_TOKENS = PASS_TOKENS
    slots = AdapterSlots(lm, len(groups))
    plans = [
        training_batches(g, config.consolidation, random.Random(i)) for i, g in enumerate(groups)
    ]
    optimizer = SlotAdamW(slots.weights)
    rate = torch.full((len(groups),), 1e-3, device="cuda")
    active = torch.ones(len(groups), dtype=torch.bool, device="cuda")
    with slots.attached():
        lm.model.train()
        for step in range(4):
            rows = [plan[step] for plan in plans]
            passes = len(slot_training._passes(rows, 8, 49152))
            with Timed(f"budget {PASS_TOKENS} step {step} passes {passes}"):
                _slot_losses(lm, slots, rows, 8)
                optimizer.step(rate, active, 1.0)
        lm.model.eval()
    print("peak GB", torch.cuda.max_memory_allocated() / 1e9, flush=True)


if __name__ == "__main__":
    main()
