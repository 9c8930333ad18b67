"""parametric-memory: documents written into a LoRA adapter, so a local LLM answers
questions about them with no retrieved context in its prompt (InfiniteICL)."""

from ._version import __version__
from .config import (
    ChunkingConfig,
    ConsolidationConfig,
    ElicitationConfig,
    MemoryConfig,
    SelectionConfig,
    ShardingConfig,
)
from .errors import (
    CorruptMemoryError,
    DocumentNotFoundError,
    IncompatibleMemoryError,
    InvalidDocumentError,
    MemoryExistsError,
    MemoryLockedError,
    MemoryNotFoundError,
    ModelLoadError,
    ParametricMemoryError,
    TrainingDivergedError,
)
from .ingest import IngestReport
from .memory import MemoryInfo, ParametricMemory, Recollection

__all__ = [
    "ChunkingConfig",
    "ConsolidationConfig",
    "CorruptMemoryError",
    "DocumentNotFoundError",
    "ElicitationConfig",
    "IncompatibleMemoryError",
    "IngestReport",
    "InvalidDocumentError",
    "MemoryConfig",
    "MemoryExistsError",
    "MemoryInfo",
    "MemoryLockedError",
    "MemoryNotFoundError",
    "ModelLoadError",
    "ParametricMemory",
    "ParametricMemoryError",
    "Recollection",
    "SelectionConfig",
    "ShardingConfig",
    "TrainingDivergedError",
    "__version__",
]
