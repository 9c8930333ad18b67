"""LlamaIndex retriever over parametric-memory."""

from llama_index.retrievers.parametric_memory.base import ParametricMemoryRetriever

__all__ = ["ParametricMemoryRetriever"]
