"""One commit's hard-linking of 999 unchanged shards (3 files each) out of 1,000.

PYTHONPATH=src python benchmarks/results/shard_writes/link_shards.py
"""

import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from parametric_memory import store

SHARDS = 1000
STATE = "state-000001"


def main() -> None:
    root = Path(tempfile.mkdtemp())
    files = {f"{STATE}/chunks.jsonl": "digest"}
    for shard in range(SHARDS):
        folder = root / STATE / store.shard_dir(shard)
        folder.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
            (folder / name).write_text("x")
            files[f"{STATE}/{store.shard_dir(shard)}/{name}"] = "digest"
    manifest = SimpleNamespace(state=STATE, files=files)
    for _ in range(2):
        staging = Path(tempfile.mkdtemp(dir=root))
        start = time.perf_counter()
        carried = store._link_shards(root, manifest, staging, range(1, SHARDS))
        seconds = time.perf_counter() - start
        print(f"{len(carried)} files of {SHARDS - 1} shards linked in {seconds:.3f} s")
        shutil.rmtree(staging)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
