"""The LlamaIndex examples run end to end on the tiny model (`--model PATH --fast`)."""

from __future__ import annotations

from li_tiny import run_example

from parametric_memory.store import read_manifest


def test_ingest_query_example_swaps_the_index_and_reruns_without_training(tmp_path):
    folder = tmp_path / "memory"
    first = run_example("llamaindex_ingest_query.py", folder)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"memory {folder}: 1 document(s)" in first.stdout
    assert "recalled: '" in first.stdout  # index.as_retriever()
    assert "sources: ['brindlewick.txt']" in first.stdout  # cited from the recall
    manifest = read_manifest(folder)  # the index made the memory folder
    assert list(manifest.documents) == ["brindlewick"]

    again = run_example("llamaindex_ingest_query.py", folder)  # same document, same version
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"memory {folder}: 1 document(s)" in again.stdout
    assert "sources: ['brindlewick.txt']" in again.stdout
    rerun = read_manifest(folder)
    assert list(rerun.documents) == ["brindlewick"]
    assert rerun.updated_at == manifest.updated_at  # no training, no new commit
    assert rerun.files == manifest.files


def test_chat_memory_example_runs_on_the_tiny_model(tmp_path):
    result = run_example("llamaindex_chat_memory.py", tmp_path / "memory")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ["consolidated ['conversation-", "session 2 assistant:"]:
        assert line in result.stdout
