"""The LangChain examples run end to end on the tiny model (`--model PATH --fast`)."""

from __future__ import annotations

import pytest
from lc_tiny import run_example

from parametric_memory.store import read_manifest


def test_rag_example_swaps_the_vector_store_and_reruns_without_training(tmp_path):
    folder = tmp_path / "memory"
    first = run_example("langchain_rag.py", folder)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"memory {folder}: 1 document(s)" in first.stdout
    assert "answer: '" in first.stdout  # the LCEL chain's answer
    assert "sources: ['festival.txt']" in first.stdout  # cited from the retrieved documents
    manifest = read_manifest(folder)  # the vector store made the memory folder
    assert list(manifest.documents) == ["festival"]

    again = run_example("langchain_rag.py", folder)  # the same documents: nothing new
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"memory {folder}: 1 document(s)" in again.stdout
    assert "answer: '" in again.stdout
    rerun = read_manifest(folder)
    assert list(rerun.documents) == ["festival"]
    assert rerun.updated_at == manifest.updated_at  # no training, no new commit
    assert rerun.files == manifest.files


def test_agent_example_runs_on_the_tiny_model(tmp_path):
    pytest.importorskip("langchain.agents")
    result = run_example("langchain_agent_memory.py", tmp_path / "memory")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ["queued for consolidation:", "session 2 agent:"]:
        assert line in result.stdout
