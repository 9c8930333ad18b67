"""LlamaIndex ingestion transform writing nodes into parametric-memory."""

from llama_index.ingestion.parametric_memory.base import ParametricMemoryTransform

__all__ = ["ParametricMemoryTransform"]
