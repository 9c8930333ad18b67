"""Memories on a tiny talking model, shared by the integration test suites (seconds each)."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tiny_model import build_talking_tiny_model

from parametric_memory import MemoryConfig, ParametricMemory

REPO = Path(__file__).resolve().parents[1]

FACTS = (
    "The Quillhaven lantern festival is held every May 14. "
    "Its founder, Mira Tallow, lit the first lantern in 1911."
)


def scratch_dir(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def tiny_model_dir() -> Path:
    return build_talking_tiny_model(scratch_dir("pm-tiny-model-") / "model")


def tiny_config() -> MemoryConfig:
    return MemoryConfig(
        model=str(tiny_model_dir()),
        elicitation={"max_answer_tokens": 8},
        consolidation={"epochs": 1},
    )


def new_memory(folder: Path | None = None) -> ParametricMemory:
    return ParametricMemory.create(folder or scratch_dir("pm-tiny-memory-"), tiny_config())


@functools.cache
def shared_memory() -> ParametricMemory:
    """One memory holding one short document, shared by the read-only tests."""
    memory = new_memory()
    memory.add_documents([FACTS], ids=["quillhaven"], progress=False)
    return memory


def run_example(script: str, memory_folder: Path) -> subprocess.CompletedProcess:
    """Run `examples/<script>` on the tiny model, as a user would from the shell."""
    command = [sys.executable, str(REPO / "examples" / script), "--model", str(tiny_model_dir())]
    command += ["--fast", "--memory", str(memory_folder)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
