"""LangChain integration for parametric-memory: documents consolidated into a LoRA adapter,
recalled and answered from the weights of a local LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .chat_models import ChatParametricMemory
from .indexes import ParametricMemoryIndex
from .retrievers import ParametricMemoryRetriever
from .tools import create_parametric_memory_tool
from .vectorstores import ParametricMemoryVectorStore

if TYPE_CHECKING:
    from .middleware import ParametricMemoryMiddleware

__version__ = "0.1.0"
__all__ = [
    "ChatParametricMemory",
    "ParametricMemoryIndex",
    "ParametricMemoryMiddleware",
    "ParametricMemoryRetriever",
    "ParametricMemoryVectorStore",
    "__version__",
    "create_parametric_memory_tool",
]


def __getattr__(name: str) -> Any:
    # The middleware needs the optional `langchain` package (extra "agents").
    if name == "ParametricMemoryMiddleware":
        from .middleware import ParametricMemoryMiddleware

        return ParametricMemoryMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
