"""LlamaIndex managed index over parametric-memory: `VectorStoreIndex.from_documents(docs)`
swapped for a memory that answers from its weights."""

from llama_index.indices.managed.parametric_memory.base import ParametricMemoryIndex

__all__ = ["ParametricMemoryIndex"]
