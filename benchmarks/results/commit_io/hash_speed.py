"""sha256 of 32 files of 19.6 MB (random bytes, just written), one thread, as `store`
hashed a commit's files before, against `store.hash_tree`'s thread pool.

    PYTHONPATH=src python benchmarks/results/commit_io/hash_speed.py [ROOT]
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from parametric_memory import store

FILES = 32
FILE_BYTES = 19_593_064


def main() -> None:
    root = Path(tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None))
    for number in range(FILES):
        (root / f"f{number:02d}").write_bytes(os.urandom(FILE_BYTES))
    megabytes = FILES * FILE_BYTES / 1e6
    for _ in range(2):
        start = time.perf_counter()
        one = {path.name: store.file_sha256(path) for path in sorted(root.iterdir())}
        single = time.perf_counter() - start
        start = time.perf_counter()
        pooled = store.hash_tree(root)
        threads = time.perf_counter() - start
        assert one == pooled
        print(
            f"one thread {single:.2f} s ({megabytes / single:.0f} MB/s), "
            f"hash_tree {threads:.2f} s ({megabytes / threads:.0f} MB/s)",
            flush=True,
        )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
