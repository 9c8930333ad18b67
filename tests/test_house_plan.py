"""The house plan holds: the layers' contracts, the backend chosen once by capability, and
prompt versions stamped into manifests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from parametric_memory import MemoryConfig, ModelLoadError, ParametricMemory, store
from parametric_memory.config import EngineConfig
from parametric_memory.engine import choose_backend
from parametric_memory.method.prompts import PROMPT_VERSION

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept():
    """The layers of docs/ARCHITECTURE.md, as pyproject.toml's import-linter contracts."""
    command = Path(sys.executable).parent / "lint-imports"
    if not command.exists():
        command = shutil.which("lint-imports")
    assert command, "import-linter is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([str(command), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]


def test_a_cpu_device_gets_the_reference_backend():
    backend = choose_backend(torch.device("cpu"), EngineConfig())
    assert backend.name == "reference"
    assert not (backend.graphed_training or backend.fast_decode or backend.merged_answers)
    assert backend.teacher_shares_chunk_cache and backend.documents_together == 1


def test_the_cuda_backend_is_refused_where_there_is_no_cuda():
    with pytest.raises(ModelLoadError, match=r"engine\.backend='cuda'"):
        choose_backend(torch.device("cpu"), EngineConfig(backend="cuda"))


def test_the_reference_backend_can_be_forced_on_cuda():
    backend = choose_backend(torch.device("cuda"), EngineConfig(backend="reference"))
    assert backend.name == "reference"
    switched = choose_backend(torch.device("cuda"), EngineConfig(fast_decode=False))
    assert switched.name == "cuda" and not switched.fast_decode and switched.graphed_training


def test_a_loaded_model_carries_the_backend_of_its_config(tiny_config):
    from parametric_memory.engine import LoadedModel  # noqa: F401  (the public engine name)
    from parametric_memory.engine.models import load_model

    lm = load_model(tiny_config.model_copy(update={"engine": EngineConfig(backend="reference")}))
    assert lm.backend.name == "reference"


def test_a_new_memory_stamps_its_prompt_version_and_an_old_one_reads_as_1(
    tmp_path, tiny_config: MemoryConfig
):
    ParametricMemory.create(tmp_path / "m", tiny_config)
    manifest_file = tmp_path / "m" / store.MANIFEST_FILE
    raw = json.loads(manifest_file.read_text())
    assert raw["prompt_version"] == PROMPT_VERSION
    del raw["prompt_version"]
    manifest_file.write_text(json.dumps(raw))
    assert store.read_manifest(tmp_path / "m").prompt_version == 1
