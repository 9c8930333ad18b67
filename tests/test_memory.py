"""End to end on a tiny random model: ingest, persistence, de-duplication, delete, locks,
and the errors a user sees."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from parametric_memory import (
    CorruptMemoryError,
    IncompatibleMemoryError,
    InvalidArgumentError,
    InvalidDocumentError,
    MemoryExistsError,
    MemoryLockedError,
    MemoryNotFoundError,
    ParametricMemory,
    store,
)
from parametric_memory.config import ChunkingConfig
from parametric_memory.store.verify import verify_memory

DOCS = [
    "New hires at Brindlewick Analytics get 27 vacation days. The office is in Quillhaven.",
    "The Zorbian festival is held every May 14. It draws 3,400 visitors to Orsk Hollow.",
]


@pytest.fixture
def memory(tmp_path, tiny_config):
    return ParametricMemory.create(tmp_path / "mem", tiny_config)


def test_ingest_commits_adapter_manifest_and_transfer_set(memory):
    report = memory.add_documents(DOCS, ids=["a", "b"], progress=False)
    assert report.added == ["a", "b"] and report.transfer_items > 0
    info = memory.info()
    assert info.documents == 2 and info.adapter_bytes > 0 and info.tokens > 0
    manifest = json.loads((memory.root / store.MANIFEST_FILE).read_text())
    assert set(manifest["documents"]) == {"a", "b"}
    assert verify_memory(memory.root) == []


def test_adding_held_content_again_is_a_no_op(memory):
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    before = memory.info().updated_at
    report = memory.add_documents(DOCS[:1], ids=["a-again"], progress=False)
    assert report.skipped == ["a-again"] and report.added == []
    assert memory.info().updated_at == before


def test_same_id_with_new_content_is_refused(memory):
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    with pytest.raises(InvalidDocumentError, match="delete it first"):
        memory.add_documents(DOCS[1:], ids=["a"], progress=False)


def test_reopened_memory_answers_like_the_original(memory, tiny_config):
    memory.add_documents(DOCS, ids=["a", "b"], progress=False)
    question = "How many vacation days?"
    expected = memory.ask(question, max_new_tokens=6)
    reopened = ParametricMemory.open(memory.root)
    assert reopened.ask(question, max_new_tokens=6) == expected
    assert reopened.documents.keys() == {"a", "b"}


def test_adapter_changes_the_answers_distribution(memory):
    lm = memory.model
    before = {k: v.clone() for k, v in lm.model.state_dict().items() if "lora_B" in k}
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    after = {k: v for k, v in lm.model.state_dict().items() if "lora_B" in k}
    assert any(not (before[k] == after[k]).all() for k in before)


def test_elicitation_is_written_by_the_base_model_whatever_the_adapter_holds(memory):
    from parametric_memory.engine.generation import generate
    from parametric_memory.method.elicit import elicit_transfer_set
    from parametric_memory.records import Chunk

    lm, chunk = memory.model, Chunk("c", "d", 0, DOCS[1], 20)
    clean = elicit_transfer_set(lm, [chunk], memory.config.elicitation)
    plain = generate(lm, [DOCS[0]], 8, 1)
    with torch.no_grad():
        for name, weight in lm.model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.5)
    assert generate(lm, [DOCS[0]], 8, 1) != plain  # the adapter now changes answers...
    assert elicit_transfer_set(lm, [chunk], memory.config.elicitation) == clean  # ...not these


def test_delete_document_removes_it_and_its_transfer_items(memory):
    memory.add_documents(DOCS, ids=["a", "b"], progress=False)
    memory.delete_document("a")
    assert memory.documents.keys() == {"b"}
    chunks = store.read_chunks(memory.root, store.read_manifest(memory.root))
    assert {c.document_id for c in chunks} == {"b"}
    assert verify_memory(memory.root) == []


def test_create_refuses_an_existing_memory(memory, tiny_config):
    with pytest.raises(MemoryExistsError):
        ParametricMemory.create(memory.root, tiny_config)


def test_open_missing_memory(tmp_path):
    with pytest.raises(MemoryNotFoundError, match="does not exist"):
        ParametricMemory.open(tmp_path / "nowhere")


def test_corrupt_manifest_is_reported(memory):
    (memory.root / store.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CorruptMemoryError, match="not valid JSON"):
        ParametricMemory.open(memory.root)


def test_newer_schema_asks_for_an_upgrade(memory):
    path = memory.root / store.MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw.update(schema_version=99, library_version="9.0.0")
    path.write_text(json.dumps(raw))
    with pytest.raises(IncompatibleMemoryError, match=r"upgrade parametric-memory to >= 9\.0\.0"):
        ParametricMemory.open(memory.root)


def test_other_base_model_is_refused(memory, tmp_path):
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    path = memory.root / store.MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["config"]["model"] = str(other)
    path.write_text(json.dumps(raw))
    with pytest.raises(IncompatibleMemoryError, match="same base model"):
        ParametricMemory.open(memory.root)


def test_tampered_adapter_fails_verify(memory):
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    manifest = store.read_manifest(memory.root)
    weights = store.shard_weights(memory.root, manifest, 0)
    weights.write_bytes(weights.read_bytes()[:100])
    assert any("hash mismatch" in p for p in verify_memory(memory.root))


def test_a_second_writer_is_told_who_holds_the_lock(memory):
    with store.write_lock(memory.root), pytest.raises(MemoryLockedError, match="locked by pid"):
        memory.add_documents(DOCS[:1], progress=False)


def test_failed_ingest_leaves_the_last_commit(memory, monkeypatch):
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    before = verify_memory(memory.root), memory.documents.keys()

    def boom(*args, **kwargs):
        raise RuntimeError("crash during consolidation")

    monkeypatch.setattr("parametric_memory.ingest.transform", boom)
    with pytest.raises(RuntimeError):
        memory.add_documents(DOCS[1:], ids=["b"], progress=False)
    assert (verify_memory(memory.root), memory.documents.keys()) == before
    assert ParametricMemory.open(memory.root).documents.keys() == {"a"}


def test_stream_yields_the_same_text_as_ask(memory):
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    streamed = "".join(memory.stream("Where is the office?", max_new_tokens=6)).strip()
    assert streamed == memory.ask("Where is the office?", max_new_tokens=6)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parametric_memory.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_ingest_info_ask_verify_forget(tmp_path, tiny_model_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(DOCS[0])
    (docs / "b.txt").write_text(DOCS[1])
    mem = str(tmp_path / "mem")
    ingest = _cli("ingest", str(docs), "--memory", mem, "--model", str(tiny_model_dir))
    assert ingest.returncode == 0, ingest.stderr
    assert "added 2 document(s)" in ingest.stdout
    info = json.loads(_cli("info", "--memory", mem).stdout)
    assert info["documents"] == 2
    assert _cli("ask", "Where?", "--memory", mem, "--max-new-tokens", "4").returncode == 0
    bm25_alone = _cli("ask", "Where?", "--memory", mem, "--max-new-tokens", "4", "--rerank", "1")
    assert bm25_alone.returncode == 0, bm25_alone.stderr
    assert _cli("verify", "--memory", mem).stdout.strip().endswith("ok")
    assert _cli("forget", "a.md", "--memory", mem).returncode == 0
    assert json.loads(_cli("info", "--memory", mem).stdout)["documents"] == 1


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["info", "--memory", "{tmp}/missing"], "does not exist"),
        ("binary", ["ingest", "{tmp}/bin.txt", "--memory", "{tmp}/m"], "NUL bytes"),
        ("empty", ["ingest", "{tmp}/empty.md", "--memory", "{tmp}/m"], "empty"),
        ("latin1", ["ingest", "{tmp}/latin.txt", "--memory", "{tmp}/m"], "not UTF-8"),
        ("corrupt", ["info", "--memory", "{tmp}/c"], "not valid JSON"),
        (
            "none",
            ["ingest", "{tmp}/x.md", "--memory", "{tmp}/m", "--model", "{tmp}/nomodel"],
            "no such file",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(tmp_path, setup, args, message):
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / store.MANIFEST_FILE).write_text("{oops")
    result = _cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_wrong_model_is_a_clean_error(tmp_path):
    (tmp_path / "x.md").write_text(DOCS[0])
    result = _cli(
        "ingest", str(tmp_path / "x.md"), "--memory", str(tmp_path / "m"), "--model", str(tmp_path)
    )
    assert result.returncode == 1 and "cannot load model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_document_longer_than_one_transformation_replays_its_own_chunks(tmp_path, tiny_config):
    """The second transformation replays items of the first one's chunks (a KeyError once)."""
    long = " ".join(f"Sentence {i} says the Orsk ferry sails at {i} o'clock." for i in range(12))
    consolidation = tiny_config.consolidation.model_copy(update={"chunks_per_transformation": 1})
    config = tiny_config.model_copy(
        update={"consolidation": consolidation, "chunking": ChunkingConfig(chunk_tokens=64)}
    )
    memory = ParametricMemory.create(tmp_path / "mem", config)
    report = memory.add_documents([long], ids=["long"], progress=False)
    assert memory.documents["long"].chunks > 1 and report.transfer_items > 0
    assert verify_memory(memory.root) == []


def test_recall_cites_the_documents_that_wrote_it_even_when_its_words_match_none(
    tmp_path, tiny_config
):
    """A RAG chain cites the recalled text's sources: the held documents its words match,
    or, where they match none (a small model's recall may share no word with what it
    holds), the documents the query was routed to."""
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    memory.add_documents(
        ["The Quillhaven lantern festival is held every May 14.", "Odo Brask runs payroll."],
        ids=["festival", "payroll"],
        progress=False,
    )
    recollection = memory.recall("When is the Quillhaven lantern festival?", max_new_tokens=4)
    assert recollection.document_ids[0] == "festival"
    queries = ["When is the Quillhaven lantern festival?", "Who runs payroll?"]
    batch = memory.recall_batch(queries, max_new_tokens=4)
    assert batch == [memory.recall(q, max_new_tokens=4) for q in queries]
    assert batch[1].document_ids[0] == "payroll"
    with pytest.raises(InvalidArgumentError, match="list of strings"):
        memory.recall_batch("Who runs payroll?")


def test_the_kinds_off_by_default_elicit_and_train(tmp_path, tiny_config):
    from parametric_memory import store

    kinds = ("cloze", "reverse", "implications", "structure")
    elicitation = tiny_config.elicitation.model_copy(update={"prompt_kinds": kinds})
    memory = ParametricMemory.create(
        tmp_path / "m", tiny_config.model_copy(update={"elicitation": elicitation})
    )
    memory.add_documents(["The Quillhaven festival is held every May 14."], progress=False)
    manifest = store.read_manifest(memory.root)
    held = {item.kind for item in store.read_transfer_set(memory.root, manifest)}
    assert "reverse" in held and held <= set(kinds)
