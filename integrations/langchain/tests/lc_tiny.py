"""A tiny random-weight model and memories on it, so the standard suites run in seconds.

The model is the core's `tests/tiny_model.py` one with an untied, random output layer:
with tied embeddings a random model only echoes the prompt's last token (a newline), so
every answer would be empty, and LangChain's standard tests want non-empty text."""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from parametric_memory import MemoryConfig, ParametricMemory

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))
from tiny_model import build_tiny_model  # noqa: E402

FACTS = (
    "The Quillhaven lantern festival is held every May 14. "
    "Its founder, Mira Tallow, lit the first lantern in 1911."
)


def build_talking_tiny_model(folder: Path, seed: int = 3) -> Path:
    from transformers import LlamaForCausalLM

    build_tiny_model(folder, seed=seed)
    model = LlamaForCausalLM.from_pretrained(folder)
    model.config.tie_word_embeddings = False
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(model.lm_head.weight.shape, generator=generator) * 0.5
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(folder)
    return folder


def scratch_dir(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def tiny_model_dir() -> Path:
    return build_talking_tiny_model(scratch_dir("pm-lc-model-") / "model")


def tiny_config() -> MemoryConfig:
    return MemoryConfig(
        model=str(tiny_model_dir()),
        elicitation={"max_answer_tokens": 8},
        consolidation={"epochs": 1},
    )


def new_memory(folder: Path | None = None) -> ParametricMemory:
    return ParametricMemory.create(folder or scratch_dir("pm-lc-memory-"), tiny_config())


@functools.cache
def shared_memory() -> ParametricMemory:
    """One memory holding one short document, shared by the read-only tests."""
    memory = new_memory()
    memory.add_documents([FACTS], ids=["quillhaven"], progress=False)
    return memory
