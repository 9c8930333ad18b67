"""LlamaIndex ingestion transform writing nodes into parametric-memory, and the vector-store
slot that carries an `IngestionPipeline`'s upserts and deletions to it."""

from llama_index.ingestion.parametric_memory.base import (
    REF_DOC_HASH,
    ParametricMemoryTransform,
    ParametricMemoryVectorStore,
)

__all__ = ["REF_DOC_HASH", "ParametricMemoryTransform", "ParametricMemoryVectorStore"]
