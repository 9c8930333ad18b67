"""Writing 32 fresh shards of the default model: `copy_to_adapter` + `save_pretrained` per
slot (before) against one host copy + `state_dict` + `write_adapter` per slot (now).

    PYTHONPATH=src python benchmarks/results/shard_writes/write_shards.py
"""

import shutil
import tempfile
import time
from pathlib import Path

import torch

from parametric_memory import MemoryConfig
from parametric_memory.engine.adapter_files import adapter_config_json, write_adapter
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.models import load_model
from parametric_memory.method.consolidate import attach_adapter

SHARDS = 32


def main() -> None:
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    slots = AdapterSlots(lm, SHARDS)
    with torch.no_grad():
        slots.weights.normal_(std=0.01)
    for repetition in range(4):
        folder = Path(tempfile.mkdtemp(dir="/tmp"))
        # Alternate which goes first: the disk's write-back of one run slows the next.
        order = ("before", "now") if repetition % 2 == 0 else ("now", "before")
        seconds = {way: timed(write, way, lm, slots, folder) for way in order}
        print(
            f"{SHARDS} shards, {order[0]} first: "
            + ", ".join(
                f"{way} {s:.2f} s ({s / SHARDS * 1000:.0f} ms each)" for way, s in seconds.items()
            )
        )
        shutil.rmtree(folder)


def timed(action, *args) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def write(way: str, lm, slots: AdapterSlots, folder: Path) -> None:
    if way == "before":
        for slot in range(SHARDS):
            slots.copy_to_adapter(slot)
            lm.model.save_pretrained(folder / f"before{slot}")
        return
    config_json = adapter_config_json(lm.model)
    for slot, tensors in enumerate(slots.state_dicts()):
        write_adapter(folder / f"now{slot}", config_json, tensors)


if __name__ == "__main__":
    main()
