"""Multi-process ingest (torchrun): shards spread over processes give the memory one process
writes, and a failure in any process commits nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from parametric_memory import ParametricMemory, ShardingConfig, store
from parametric_memory.records import Document
from parametric_memory.sharding import balance_shards, plan_shards

TEXTS = [
    "New hires at Brindlewick Analytics get 27 vacation days in Quillhaven.",
    "The Zorbian festival is held every May 14 and draws 3,400 visitors to Orsk.",
    "Marrow Bay harvests violet kelp each October using copper rakes.",
    "The Teskel bridge over the Varn river is 412 metres long and opened in 1987.",
    "Odrin Pell wrote the Saltmarsh Ledger, a history of the Grey Coast salt trade.",
]
IDS = ["brindlewick", "zorbian", "kelp", "teskel", "odrin"]

SCRIPT = """
import json, os, sys
import torch.distributed as dist
from parametric_memory import MemoryConfig
from parametric_memory.distributed import add_documents_distributed, init_process_group
from parametric_memory.documents import Document
from parametric_memory.ingest import Ingest

def say(*words):
    # One write() per line: lines of two processes sharing a pipe then never interleave.
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

path, config_json, batches_json, fail_rank = sys.argv[1:5]
config = MemoryConfig.model_validate_json(config_json)
init_process_group()
if dist.get_rank() == int(fail_rank):
    def broken_disk(*args, **kwargs):
        raise OSError("No space left on device")
    Ingest._consolidate_shard = broken_disk
try:
    for batch in json.loads(batches_json):
        documents = [Document(i, t) for i, t in batch]
        report = add_documents_distributed(path, documents, config=config, progress=False)
        say("REPORT", json.dumps([report.added, report.chunks, report.transfer_items]))
except Exception as error:
    say("ERROR", type(error).__name__, error)
finally:
    dist.destroy_process_group()
"""


def _torchrun(tmp_path, path, config, batches, fail_rank=-1) -> list[str]:
    script = tmp_path / "ingest.py"
    script.write_text(textwrap.dedent(SCRIPT))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", str(script), str(path), config.model_dump_json()]
    command += [json.dumps(batches), str(fail_rank)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if line.startswith(("REPORT", "ERROR"))]


def _batches(*spans: tuple[int, int]) -> list[list[tuple[str, str]]]:
    return [list(zip(IDS[a:b], TEXTS[a:b], strict=True)) for a, b in spans]


def _weights(memory: ParametricMemory) -> dict[int, dict[str, torch.Tensor]]:
    shards = {record.shard for record in memory.documents.values()}
    manifest = memory._manifest
    return {s: load_file(store.shard_weights(memory.root, manifest, s)) for s in shards}


@pytest.mark.parametrize(
    "sharding",
    [
        ShardingConfig(documents_per_shard=2),
        # A shard per document, consolidated two at a time, grouped differently by one and by
        # two processes: the weights then differ by rounding (the tolerance of
        # test_parallel_shards.py).
        ShardingConfig(documents_per_shard=1, shards_in_parallel=2),
    ],
    ids=["two-per-shard", "together"],
)
def test_two_processes_write_the_memory_one_process_writes(tmp_path, tiny_config, sharding):
    tolerance = {"rtol": 1e-4, "atol": 1e-6}
    if sharding.shards_in_parallel:
        tolerance = {"rtol": 1e-3, "atol": 2e-4}
    # float32 storage: the two layouts' weights differ by rounding, which bfloat16 storage
    # could round apart by a whole bfloat16 step
    stored = tiny_config.consolidation.model_copy(update={"adapter_dtype": "float32"})
    config = tiny_config.model_copy(update={"sharding": sharding, "consolidation": stored})
    alone = ParametricMemory.create(tmp_path / "alone", config)
    for batch in _batches((0, 3), (3, 5)):  # the second batch first fills shard 1
        ids, texts = zip(*batch, strict=True)
        alone.add_documents(list(texts), ids=list(ids), progress=False)

    lines = _torchrun(tmp_path, tmp_path / "shared", config, _batches((0, 3), (3, 5)))
    assert len(lines) == 4 and all(line.startswith("REPORT") for line in lines)
    shared = ParametricMemory.open(tmp_path / "shared")
    assert {d: r.shard for d, r in shared.documents.items()} == {
        d: r.shard for d, r in alone.documents.items()
    }
    for name in (store.CHUNKS_FILE, store.TRANSFER_SET_FILE):
        assert _records(shared, name) == _records(alone, name)
    expected = _weights(alone)
    for shard, weights in _weights(shared).items():
        for key, tensor in weights.items():
            torch.testing.assert_close(tensor, expected[shard][key], **tolerance)
    assert shared.ask_batch(["How long is the Teskel bridge?"]) == alone.ask_batch(
        ["How long is the Teskel bridge?"]
    )


def _records(memory: ParametricMemory, name: str) -> list[str]:
    folder = memory.root / memory._manifest.state
    return (folder / name).read_text().splitlines()


def test_a_failing_process_commits_nothing(tmp_path, tiny_config):
    config = tiny_config.model_copy(update={"sharding": ShardingConfig(documents_per_shard=1)})
    path = tmp_path / "shared"
    _torchrun(tmp_path, path, config, _batches((0, 1)))
    before = store.read_manifest(path)
    lines = _torchrun(tmp_path, path, config, _batches((1, 4)), fail_rank=1)
    assert len(lines) == 2 and all("DistributedIngestError" in line for line in lines)
    assert any("No space left on device" in line for line in lines)
    after = store.read_manifest(path)
    assert after.state == before.state and list(after.documents) == ["brindlewick"]
    leftovers = [p.name for p in path.iterdir() if p.name.startswith(".")]
    assert all(not name.startswith(".incoming-") for name in leftovers), leftovers


def _documents(*sizes: int) -> list[Document]:
    return [Document(f"d{i}", "x" * size) for i, size in enumerate(sizes)]


def test_shards_are_planned_as_one_process_fills_them():
    held = {
        "a": store.DocumentRecord(
            content_hash="h", chunks=1, tokens=1, transfer_items=1, added_at="t", shard=3
        )
    }
    plan = plan_shards(held, _documents(1, 1, 1, 1), per_shard=2)
    assert {s: [d.id for d in docs] for s, docs in plan.items()} == {
        3: ["d0"],
        4: ["d1", "d2"],
        5: ["d3"],
    }
    assert list(plan_shards({}, _documents(1, 1, 1), per_shard=None)) == [0]


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_balancing_gives_every_shard_to_one_worker_largest_first(workers):
    plan = {s: _documents(size) for s, size in enumerate([50, 10, 40, 30, 20, 60])}
    assigned = balance_shards(plan, workers)
    assert len(assigned) == workers
    assert sorted(s for shards in assigned for s in shards) == list(plan)
    loads = [sum(len(plan[s][0].text) for s in shards) for shards in assigned]
    assert max(loads) <= sum(loads) / workers + 60  # no worker above the mean by a shard


def test_the_cli_under_torchrun_ingests_once_and_reports_once(tmp_path, tiny_model_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in zip(IDS, TEXTS, strict=True):
        (docs / f"{name}.txt").write_text(text)
    memory = tmp_path / "memory"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    command += ["2", "-m", "parametric_memory.cli", "ingest", str(docs), "--memory", str(memory)]
    command += ["--model", str(tiny_model_dir)]
    outputs = []
    for _ in range(2):  # the second run finds every document held
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append([line for line in done.stdout.splitlines() if line.startswith("added")])
    assert len(outputs[0]) == 1  # rank 0 reports, rank 1 does not
    assert outputs[0][0].startswith("added 5 document(s), skipped 0 already held; 5 chunk(s)")
    assert outputs[1][0].startswith("added 0 document(s), skipped 5 already held")
    held = ParametricMemory.open(memory)
    assert sorted(held.documents) == sorted(f"{name}.txt" for name in IDS)
    # the default config: one shard per document, spread over both processes
    assert sorted(record.shard for record in held.documents.values()) == list(range(len(IDS)))


def test_a_memory_locked_by_another_writer_stops_every_process(tmp_path, tiny_config):
    path = tmp_path / "shared"
    _torchrun(tmp_path, path, tiny_config, _batches((0, 1)))
    with store.write_lock(path):  # another writer holds the memory
        lines = _torchrun(tmp_path, path, tiny_config, _batches((1, 3)))
    assert len(lines) == 2 and all(line.startswith("ERROR") for line in lines)
    assert all("locked" in line for line in lines), lines
    assert list(store.read_manifest(path).documents) == ["brindlewick"]
