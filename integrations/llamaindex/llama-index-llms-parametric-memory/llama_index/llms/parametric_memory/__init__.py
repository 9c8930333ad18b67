"""LlamaIndex LLM over parametric-memory."""

from llama_index.llms.parametric_memory.base import ParametricMemoryLLM

__all__ = ["ParametricMemoryLLM"]
