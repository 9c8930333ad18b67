"""parametric-memory: documents written into a LoRA adapter, so a local LLM answers
questions about them with no retrieved context in its prompt (InfiniteICL)."""

from ._version import __version__
from .config import (
    ChunkingConfig,
    CompactionConfig,
    ConsolidationConfig,
    ElicitationConfig,
    EngineConfig,
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
from .records import CompactionReport

__all__ = [
    "ChunkingConfig",
    "CompactionConfig",
    "CompactionReport",
    "ConsolidationConfig",
    "CorruptMemoryError",
    "DocumentNotFoundError",
    "ElicitationConfig",
    "EngineConfig",
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
