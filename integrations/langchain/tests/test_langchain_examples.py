"""The LangChain examples run end to end on the tiny model (`--model PATH --fast`)."""

from __future__ import annotations

import pytest
from lc_tiny import run_example


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("langchain_rag.py", ["consolidated ['festival']", "RAG chain answer:"]),
        ("langchain_agent_memory.py", ["queued for consolidation:", "session 2 agent:"]),
    ],
)
def test_example_runs_on_the_tiny_model(script, expected, tmp_path):
    if script == "langchain_agent_memory.py":
        pytest.importorskip("langchain.agents")
    result = run_example(script, tmp_path / "memory")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in expected:
        assert line in result.stdout
