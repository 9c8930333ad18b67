"""One slot-training pass (forward and backward) of rows that all belong to one slot, with
every row gathering its own copy of the slot (`only_slot=None`, the code before) and with the
rows sharing one copy (`only_slot=0`). The default model on this machine's CPU (float32);
random student sequences of 48-160 tokens, 32-token answers, top-64 targets. argv: rows
(default 32), repeats (default 3)."""

import random
import sys
import time

import torch

from parametric_memory import MemoryConfig
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.models import load_model
from parametric_memory.engine.slot_training import _row_kl_sums
from parametric_memory.method.consolidate import attach_adapter
from parametric_memory.records import Example, TransferItem


def random_rows(vocab: int, count: int, rng: random.Random) -> list[Example]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        ids = [rng.randrange(3, vocab) for _ in range(rng.randint(48, 160))]
        example = Example(TransferItem("c", "entity", "", ""), ids, [], [], 32)
        example.topk_ids = torch.randint(0, vocab, (32, 64), generator=generator)
        example.topk_logprobs = torch.log_softmax(torch.randn(32, 65, generator=generator), -1)[
            :, :-1
        ].contiguous()
        rows.append(example)
    return rows


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, seed=0)
    slots = AdapterSlots(lm, 1)
    examples = random_rows(lm.model.config.vocab_size, count, random.Random(0))
    slot_of_row = torch.zeros(count, dtype=torch.long)
    lm.model.train()
    results = {}
    for only_slot in (None, 0, None, 0):  # alternated, so drift hits both alike
        times = []
        for _ in range(repeats):
            slots.weights.grad = None
            start = time.perf_counter()
            with slots.attached():
                kl = _row_kl_sums(lm, slots, examples, slot_of_row, only_slot)
                kl.sum().backward()
            times.append(time.perf_counter() - start)
        results.setdefault(only_slot, []).extend(times)
        results.setdefault(f"grad {only_slot}", slots.weights.grad.clone())
    for name, only_slot in (("a copy per row", None), ("one shared copy", 0)):
        times = sorted(results[only_slot])
        print(f"{name}: median {times[len(times) // 2]:.2f} s, min {times[0]:.2f} s ({count} rows)")
    difference = (results["grad None"] - results["grad 0"]).abs().max().item()
    print(f"largest gradient difference {difference:.2e}")


if __name__ == "__main__":
    main()
