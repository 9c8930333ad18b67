"""Three commits of a memory that each add 64 fresh shards of the default model's size
(19.6 MB of random bytes each, like a stored adapter) and carry the earlier ones over:
the wall time of `store.commit`, which syncs the new files to disk and hashes them.

    PYTHONPATH=src python benchmarks/results/commit_io/commit_shards.py [ROOT]
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from parametric_memory import MemoryConfig, store

SHARDS_PER_COMMIT = 64
SHARD_BYTES = 19_593_064


def main() -> None:
    root = Path(tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None))
    record = store.BaseModelRecord(
        name="x", fingerprint="x", model_type="llama", vocab_size=1, hidden_size=1
    )
    manifest = store.Manifest(
        created_at=store.now(), updated_at=store.now(), base_model=record, config=MemoryConfig()
    )
    for number in range(3):
        fresh = range(number * SHARDS_PER_COMMIT, (number + 1) * SHARDS_PER_COMMIT)

        def write_state(folder: Path, fresh=fresh) -> None:
            for shard in fresh:
                target = folder / store.shard_dir(shard)
                target.mkdir(parents=True)
                (target / "adapter_config.json").write_text("{}")
                (target / "adapter_model.safetensors").write_bytes(os.urandom(SHARD_BYTES))

        # The random bytes are made outside the timed part: only the commit is timed.
        staged = Path(tempfile.mkdtemp(dir=root))
        write_state(staged)
        start = time.perf_counter()
        manifest = store.commit(
            root, manifest, lambda folder, staged=staged: staged.replace(folder), range(fresh[0])
        )
        seconds = time.perf_counter() - start
        print(
            f"commit {number + 1}: {len(fresh)} new shards, {fresh[0]} carried: {seconds:.2f} s",
            flush=True,
        )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
