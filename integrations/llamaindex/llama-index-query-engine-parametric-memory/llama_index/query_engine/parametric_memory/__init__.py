"""LlamaIndex query engine over parametric-memory."""

from llama_index.query_engine.parametric_memory.base import ParametricMemoryQueryEngine

__all__ = ["ParametricMemoryQueryEngine"]
