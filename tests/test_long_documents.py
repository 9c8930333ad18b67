"""A long document (issue 28): cut into sections of consecutive chunks that follow its
headings, each consolidated into a shard of its own (never a long chain in one adapter),
routed like many short documents; forget and re-adding act on the whole document, and an
interrupted ingest resumes without redoing committed sections."""

from __future__ import annotations

import pytest

from parametric_memory import ParametricMemory, cli, store
from parametric_memory.method import transformation
from parametric_memory.method.chunking import section_starts
from parametric_memory.store.verify import verify_memory

TOPICS = [
    "Marrow Bay harvests violet kelp each October with copper rakes.",
    "The Zorbian lantern festival is held every May in Orsk.",
    "Payroll at Brindlewick is run by Odo Brask from the Hollow office.",
    "The Tarrow Bridge spans the Kessel River and opened in 1911.",
    "Quillhaven brews a juniper cider that is aged in oak for nine weeks.",
]
HANDBOOK = "\n\n".join(TOPICS)


class Interrupted(Exception):
    """The ingest stopped mid-document (a crash, a Ctrl-C)."""


def test_sections_are_even_runs_of_at_most_the_limit():
    assert section_starts(["x."] * 20, 8) == [0, 7, 13]
    assert section_starts(["x."] * 8, 8) == [0]
    assert section_starts([], 8) == []


def test_a_section_starts_at_a_nearby_heading_without_passing_the_limit():
    texts = ["x."] * 20
    texts[6] = "# Payroll\nPayroll is run weekly."
    assert section_starts(texts, 8) == [0, 6, 13]
    texts = ["x."] * 16
    texts[7] = "Chapter Two\nIt was late."  # moving here would leave 9 chunks after it
    assert section_starts(texts, 8) == [0, 8]


@pytest.fixture
def long_config(tiny_config):
    """One sentence a chunk, two chunks a transformation: the handbook is five chunks,
    three sections."""
    return tiny_config.model_copy(
        update={
            "chunking": tiny_config.chunking.model_copy(update={"chunk_tokens": 48}),
            "consolidation": tiny_config.consolidation.model_copy(
                update={"chunks_per_transformation": 2}
            ),
        }
    )


def sectioned(memory: ParametricMemory) -> store.DocumentRecord:
    return memory.documents["handbook"]


def test_a_long_document_takes_a_shard_per_section(tmp_path, long_config):
    memory = ParametricMemory.create(tmp_path / "m", long_config)
    report = memory.add_documents([HANDBOOK], ids=["handbook"], progress=False)
    assert report.added == ["handbook"]
    record = sectioned(memory)
    assert record.chunks == 5 and record.complete
    assert [s.first_chunk for s in record.sections] == [0, 2, 3]
    assert len(set(record.shards)) == 3 and memory.info().shards == 3
    assert verify_memory(memory.root) == []
    reopened = ParametricMemory.open(memory.root)
    assert reopened.add_documents([HANDBOOK], ids=["handbook"], progress=False).skipped == [
        "handbook"
    ]
    answers = reopened.answer_candidates(["When is the Zorbian lantern festival?"], candidates=3)
    assert answers[0][0].document_ids == ["handbook"]
    assert answers[0][0].shard == record.shard_of_chunk(1)  # the festival's sentence


def test_forgetting_a_long_document_removes_every_section(tmp_path, long_config):
    memory = ParametricMemory.create(tmp_path / "m", long_config)
    memory.add_documents([HANDBOOK, TOPICS[0]], ids=["handbook", "kelp"], progress=False)
    assert memory.info().shards == 4
    memory.delete_document("handbook", progress=False)
    assert list(memory.documents) == ["kelp"] and memory.info().shards == 1
    assert verify_memory(memory.root) == []
    again = memory.add_documents([HANDBOOK], ids=["handbook"], progress=False)
    assert again.added == ["handbook"] and sectioned(memory).complete


def test_an_interrupted_long_document_resumes_without_redoing_its_sections(
    tmp_path, long_config, monkeypatch, capsys
):
    memory = ParametricMemory.create(tmp_path / "m", long_config)
    real = transformation.transform
    calls: list[int] = []
    interrupt = [True]

    def failing_second(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2 and interrupt.pop():
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr("parametric_memory.ingest.transform", failing_second)
    with pytest.raises(Interrupted):
        memory.add_documents([HANDBOOK], ids=["handbook"], progress=False)
    partial = ParametricMemory.open(memory.root)
    record = sectioned(partial)
    assert not record.complete and len(record.sections) == 1 and record.chunks == 2
    first = store.shard_weights(partial.root, store.read_manifest(partial.root), record.shard)
    before = store.file_sha256(first)
    assert verify_memory(partial.root) == []
    assert cli.main(["list", "--memory", str(partial.root)]) == 0
    assert "(1 of 3 sections: add it again to finish)" in capsys.readouterr().out

    calls.clear()
    interrupt.append(False)
    report = partial.add_documents([HANDBOOK], ids=["handbook"], progress=False)
    assert report.added == ["handbook"] and calls == [1, 2]  # the two sections left
    record = sectioned(partial)
    assert record.complete and record.chunks == 5 and len(record.sections) == 3
    manifest = store.read_manifest(partial.root)
    assert store.file_sha256(store.shard_weights(partial.root, manifest, record.shard)) == before
    assert verify_memory(partial.root) == []
