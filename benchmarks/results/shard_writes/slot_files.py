"""Writing 128 fresh shards of the default model: a `save_file` of each slot's state dict
(`adapter_files` before `write_adapters`) against `write_adapters` (one safetensors header for
every slot, the slots laid out in its order and copied to the host 16 at a time). Four
repetitions, alternating which way goes first; each way's files are synced to disk after it
and timed apart ("sync").

    PYTHONPATH=src python benchmarks/results/shard_writes/slot_files.py [cpu|cuda]
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import save_file

from parametric_memory import MemoryConfig
from parametric_memory.engine.adapter_files import adapter_config_json, write_adapters
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.models import load_model
from parametric_memory.method.consolidate import attach_adapter

SHARDS = 128


def main() -> None:
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    config = MemoryConfig(device=device)
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    slots = AdapterSlots(lm, SHARDS)
    with torch.no_grad():
        slots.weights.normal_(std=0.01)
    config_json = adapter_config_json(lm.model)
    print(f"{SHARDS} shards on {device}, {os.cpu_count()} CPUs")
    for repetition in range(4):
        root = Path(tempfile.mkdtemp(dir=os.environ.get("SCRATCH", "/tmp")))
        order = ("save_file", "write_adapters")
        order = order if repetition % 2 == 0 else order[::-1]
        for way in order:
            folders = [root / way / f"s{n}" for n in range(SHARDS)]
            started = time.perf_counter()
            WAYS[way](folders, config_json, slots)
            written = time.perf_counter() - started
            os.sync()
            synced = time.perf_counter() - started - written
            print(
                f"  {way:15s} {written:6.2f} s ({written / SHARDS * 1000:5.1f} ms a shard), "
                f"sync {synced:5.2f} s"
            )
        shutil.rmtree(root)


def with_save_file(folders, config_json: bytes, slots: AdapterSlots) -> None:
    host = slots.weights.detach().to("cpu")  # as AdapterSlots.state_dicts did: one copy
    for slot, folder in enumerate(folders):
        tensors = {}
        for (key_a, key_b), (a, b) in zip(slots._keys, slots._unpack(host[slot]), strict=True):
            tensors[key_a], tensors[key_b] = a.contiguous(), b.contiguous()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_bytes(config_json)
        save_file(tensors, str(folder / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})


WAYS = {"save_file": with_save_file, "write_adapters": write_adapters}

if __name__ == "__main__":
    main()
