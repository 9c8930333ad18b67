"""Slow: the real default model end to end (ingest one invented document, reopen from disk
in a new process, answer)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parametric_memory import MemoryConfig, ParametricMemory

pytestmark = pytest.mark.slow

DOCUMENT = (
    "The Quillhaven ferry leaves the harbour every morning at 6:40. "
    "A standard adult return ticket on the Quillhaven ferry costs 14 crowns. "
    "The ferry's captain since 2019 is Odessa Marchwick."
)


def test_default_model_ingests_and_answers_after_reopening(tmp_path):
    config = MemoryConfig(consolidation={"epochs": 4})
    memory = ParametricMemory.create(tmp_path / "mem", config)
    memory.add_documents([DOCUMENT], ids=["ferry"], progress=False)
    assert memory.info().documents == 1
    script = (
        "import sys; from parametric_memory import ParametricMemory;"
        "m = ParametricMemory.open(sys.argv[1]);"
        "print(m.ask('Who is the captain of the Quillhaven ferry?', max_new_tokens=40))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "mem")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    answer = result.stdout.strip()
    assert answer, result.stderr
    assert "quillhaven" in answer.lower() or "ferry" in answer.lower()
