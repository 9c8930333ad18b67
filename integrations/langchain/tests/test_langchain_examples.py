"""The LangChain examples run end to end on the tiny model (`--model PATH --fast`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from lc_tiny import REPO, tiny_model_dir


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
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / script),
            "--model",
            str(tiny_model_dir()),
            "--fast",
            "--memory",
            str(tmp_path / "memory"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in expected:
        assert line in result.stdout
