"""Does writing shards in a background thread slow the main thread's Python? A loop counts
iterations for 2 s alone, then while another thread saves 20 MB safetensors files in a loop,
once with `save_file` and once with `save` (bytes built in Python) plus a plain file write.
The ratio is the main thread's speed with the writer against alone.

    python benchmarks/results/shard_writes/gil_release.py [ROOT]
"""

import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save, save_file

TENSORS = {f"k{i}": torch.randn(4_900_000 // 60) for i in range(60)}  # ~20 MB, like a shard


def spin(seconds: float) -> int:
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count


def writer(way: str, folder: Path, stop: threading.Event, written: list[int]) -> None:
    while not stop.is_set():
        path = folder / f"{len(written) % 20}.safetensors"
        if way == "save_file":
            save_file(TENSORS, str(path))
        else:
            path.write_bytes(save(TENSORS))
        written.append(1)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as root:
        alone = spin(2.0)
        for way in ("save_file", "save + write"):
            stop, written = threading.Event(), []
            thread = threading.Thread(target=writer, args=(way, Path(root), stop, written))
            thread.start()
            with_writer = spin(2.0)
            stop.set()
            thread.join()
            print(f"{way}: {len(written)} files; main thread at {with_writer / alone:.2f} of alone")


if __name__ == "__main__":
    main()
