"""The LlamaIndex examples run end to end on the tiny model (`--model PATH --fast`)."""

from __future__ import annotations

import pytest
from li_tiny import run_example


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("llamaindex_ingest_query.py", ["1 document(s) held", "(source nodes: 0)"]),
        ("llamaindex_chat_memory.py", ["consolidated ['conversation-", "session 2 assistant:"]),
    ],
)
def test_example_runs_on_the_tiny_model(script, expected, tmp_path):
    result = run_example(script, tmp_path / "memory")
    assert result.returncode == 0, result.stderr[-3000:]
    for line in expected:
        assert line in result.stdout
