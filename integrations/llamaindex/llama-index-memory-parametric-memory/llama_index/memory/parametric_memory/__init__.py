"""LlamaIndex memory block over parametric-memory."""

from llama_index.memory.parametric_memory.base import ParametricMemoryBlock

__all__ = ["ParametricMemoryBlock"]
