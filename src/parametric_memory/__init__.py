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
    RoutingConfig,
    SelectionConfig,
    ShardingConfig,
)
from .errors import (
    CorruptMemoryError,
    DocumentNotFoundError,
    IncompatibleMemoryError,
    InvalidArgumentError,
    InvalidDocumentError,
    MemoryExistsError,
    MemoryLockedError,
    MemoryNotFoundError,
    ModelLoadError,
    ParametricMemoryError,
    TrainingDivergedError,
)
from .ingest import IngestReport
from .memory import Candidate, MemoryInfo, ParametricMemory, Recollection, Route
from .records import CompactionReport

__all__ = [
    "Candidate",
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
    "InvalidArgumentError",
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
    "Route",
    "RoutingConfig",
    "SelectionConfig",
    "ShardingConfig",
    "TrainingDivergedError",
    "__version__",
]
