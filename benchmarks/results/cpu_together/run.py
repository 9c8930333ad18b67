"""Does consolidating fresh shards together pay on a CPU? The quickstart's two documents
ingested into a new memory one at a time (`shards_in_parallel=1`, the CPU default) and both
at once (2), default model, float32, this project's 2-core machine.

    .venv/bin/python benchmarks/results/cpu_together/run.py
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
from quickstart import DOCUMENTS

from parametric_memory import MemoryConfig, ParametricMemory


def main() -> None:
    results = {}
    for width in (1, 2):
        config = MemoryConfig(sharding={"documents_per_shard": 1, "shards_in_parallel": width})
        with tempfile.TemporaryDirectory() as folder:
            memory = ParametricMemory.create(folder, config)
            started = time.perf_counter()
            memory.add_documents(list(DOCUMENTS.values()), ids=list(DOCUMENTS), progress=False)
            results[f"shards_in_parallel={width}"] = round(time.perf_counter() - started, 1)
        print(json.dumps(results), flush=True)
    Path(__file__).with_name("result.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
