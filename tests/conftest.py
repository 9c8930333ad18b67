from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import build_tiny_model, tiny_memory_config

from parametric_memory import MemoryConfig


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_config(tiny_model_dir) -> MemoryConfig:
    return tiny_memory_config(tiny_model_dir)
