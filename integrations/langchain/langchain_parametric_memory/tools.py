"""A retriever tool over a parametric memory, for agents that decide when to recall."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.tools.retriever import create_retriever_tool

from .retrievers import ParametricMemoryRetriever

DEFAULT_TOOL_DESCRIPTION = (
    "Recall what the long-term memory holds about a topic or question. Input: a short "
    "query naming the topic. Output: text recalled from memory (it may be incomplete)."
)


def create_parametric_memory_tool(
    memory: Any,
    *,
    name: str = "recall_memory",
    description: str = DEFAULT_TOOL_DESCRIPTION,
    k: int = 1,
    max_new_tokens: int = 192,
    **kwargs: Any,
) -> BaseTool:
    """A tool (via `create_retriever_tool`) whose output is the memory's recollection of the
    query. `memory` is a `ParametricMemory` or the path of a memory folder; other keyword
    arguments go to `create_retriever_tool` (e.g. `response_format="content_and_artifact"`)."""
    retriever = ParametricMemoryRetriever(memory=memory, k=k, max_new_tokens=max_new_tokens)
    return create_retriever_tool(retriever, name, description, **kwargs)
