"""The core's tiny-model memories (`tests/tiny_memories.py`) for the LangChain tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from tiny_memories import (  # noqa: F401  (re-exported to the test modules)
    FACTS,
    REPO,
    new_memory,
    run_example,
    scratch_dir,
    shared_memory,
    tiny_config,
    tiny_model_dir,
)
