"""Shard files are written and committed on a worker thread while the next group of
documents is consolidated; a failed write or commit surfaces, commits nothing of its group
and keeps the groups before."""

from __future__ import annotations

import threading

import pytest
from test_distributed import IDS, TEXTS

from parametric_memory import ParametricMemory
from parametric_memory import ingest as ingest_module
from parametric_memory.config import ShardingConfig
from parametric_memory.documents import make_documents
from parametric_memory.engine.background_writes import BackgroundWrites
from parametric_memory.ingest import Ingest
from parametric_memory.store.verify import verify_memory


def test_submit_waits_for_the_job_before_and_raises_its_error():
    order: list[str] = []
    started = threading.Event()

    def slow() -> None:
        started.wait(5)
        order.append("slow")

    def failing() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), BackgroundWrites() as writes:
        writes.submit(slow)
        started.set()
        writes.submit(lambda: order.append("next"))  # runs after slow, never beside it
        writes.submit(failing)
        writes.submit(lambda: order.append("never"))
    assert order == ["slow", "next"]


def test_leaving_on_an_error_waits_for_the_job_and_keeps_that_error(caplog):
    finished = []

    def failing_late() -> None:
        finished.append(1)
        raise OSError("disk full")

    with pytest.raises(KeyError, match="the caller's"), BackgroundWrites() as writes:
        writes.submit(failing_late)
        raise KeyError("the caller's")
    assert finished == [1]
    assert "background shard write failed" in caplog.text


def _memory(tmp_path, tiny_config, width: int = 2) -> ParametricMemory:
    config = tiny_config.model_copy(
        update={"sharding": ShardingConfig(documents_per_shard=1, shards_in_parallel=width)}
    )
    return ParametricMemory.create(tmp_path / "mem", config)


def test_a_groups_files_are_written_while_the_next_group_is_consolidated(
    tmp_path, tiny_config, monkeypatch
):
    memory = _memory(tmp_path, tiny_config)
    real_writes = ingest_module.adapter_writes
    real_transform = ingest_module.transform_fresh_documents
    next_group_started = threading.Event()
    overlapped = []

    def writes_waiting_for_the_next_group(*args, **kwargs):
        write = real_writes(*args, **kwargs)

        def write_later() -> None:
            overlapped.append(next_group_started.wait(20))
            write()

        return write_later

    def transform(*args, **kwargs):
        if calls:
            next_group_started.set()
        calls.append(1)
        return real_transform(*args, **kwargs)

    calls: list[int] = []
    monkeypatch.setattr(ingest_module, "adapter_writes", writes_waiting_for_the_next_group)
    monkeypatch.setattr(ingest_module, "transform_fresh_documents", transform)
    report = memory.add_documents(TEXTS[:4], ids=IDS[:4], progress=False)
    assert overlapped[0] is True  # the first group's write waited for the second group
    assert sorted(report.added) == sorted(IDS[:4])
    assert verify_memory(memory.root) == []
    reopened = ParametricMemory.open(memory.root)
    assert sorted(reopened.documents) == sorted(IDS[:4])


def test_a_failed_write_commits_nothing_of_its_group_and_keeps_the_groups_before(
    tmp_path, tiny_config, monkeypatch
):
    memory = _memory(tmp_path, tiny_config)
    real_writes = ingest_module.adapter_writes
    groups = []

    def second_group_fails(*args, **kwargs):
        groups.append(real_writes(*args, **kwargs))
        if len(groups) != 2:
            return groups[-1]

        def failing() -> None:
            raise OSError("No space left on device (simulated)")

        return failing

    monkeypatch.setattr(ingest_module, "adapter_writes", second_group_fails)
    plan = Ingest(memory.writer(), make_documents(TEXTS, IDS)).shards
    planned = [document.id for documents in plan.values() for document in documents]
    with pytest.raises(OSError, match="No space left"):
        memory.add_documents(TEXTS, ids=IDS, progress=False)
    assert sorted(memory.documents) == sorted(planned[:2])
    assert sorted(ParametricMemory.open(memory.root).documents) == sorted(planned[:2])
    assert verify_memory(memory.root) == []
    assert [p.name for p in memory.root.iterdir() if p.name.startswith(".incoming-")] == []
    monkeypatch.setattr(ingest_module, "adapter_writes", real_writes)
    report = memory.add_documents(TEXTS, ids=IDS, progress=False)
    assert sorted(report.added) == sorted(planned[2:]) and len(memory.documents) == 5
    assert memory.ask_batch(["When is the Zorbian festival?"])
