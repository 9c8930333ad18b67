"""Writing 48 fresh shards of the default model one after another against a pool of threads
(4, or with --pool the pool the memory writes with: `store.for_each_file`), each way timed
with the disk sync after it, alternating which goes first.

    PYTHONPATH=src python benchmarks/results/shard_writes/threaded_writes.py [ROOT] [--pool]
"""

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from parametric_memory import MemoryConfig, store
from parametric_memory.engine.adapter_files import adapter_config_json, write_adapter
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.models import load_model
from parametric_memory.method.consolidate import attach_adapter

SHARDS = 48


def main() -> None:
    config = MemoryConfig()
    lm = load_model(config)
    attach_adapter(lm, config.consolidation, 0)
    slots = AdapterSlots(lm, SHARDS)
    with torch.no_grad():
        slots.weights.normal_(std=0.01)
    config_json = adapter_config_json(lm.model)
    for repetition in range(4):
        for way in ("one", "threads") if repetition % 2 == 0 else ("threads", "one"):
            root = next((a for a in sys.argv[1:] if not a.startswith("--")), None)
            folder = Path(tempfile.mkdtemp(dir=root))
            os.sync()
            start = time.perf_counter()
            jobs = [(folder / f"s{n}", tensors) for n, tensors in enumerate(slots.state_dicts())]
            if way == "one":
                for target, tensors in jobs:
                    write_adapter(target, config_json, tensors)
            elif "--pool" in sys.argv:
                store.for_each_file(lambda job: write_adapter(job[0], config_json, job[1]), jobs)
            else:
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda job: write_adapter(job[0], config_json, job[1]), jobs))
            written = time.perf_counter() - start
            os.sync()
            synced = time.perf_counter() - start
            print(
                f"{way}: write {written / SHARDS * 1000:.0f} ms a shard, "
                f"with sync {synced / SHARDS * 1000:.0f}",
                flush=True,
            )
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
