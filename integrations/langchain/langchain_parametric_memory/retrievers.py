"""`ParametricMemoryRetriever`: a drop-in for `vectorstore.as_retriever()` whose documents
are text the memory writes out from its weights (no vector search, no stored passages)."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, field_validator

from parametric_memory import ParametricMemory

from ._memory import passage_metadata, recall_passages, resolve_memory


class RecallRetrieval:
    """`BaseRetriever`'s retrieval by recall, for classes with `memory`, `k` and
    `max_new_tokens` fields (this retriever and `ParametricMemoryIndex`)."""

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return recall_documents(self.memory, query, k or self.k, self.max_new_tokens)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return await asyncio.to_thread(
            recall_documents, self.memory, query, k or self.k, self.max_new_tokens
        )


class ParametricMemoryRetriever(RecallRetrieval, BaseRetriever):
    """Retrieve by recall: each `Document` is text the memory produces about the query.

    The first document is `memory.recall(query)`; when `k > 1`, the others answer
    rephrasings of the query (`ask`), and identical texts are dropped, so fewer than `k`
    documents come back if the memory has nothing different to say. Each document costs
    one generation (up to `max_new_tokens` tokens).

    ```python
    retriever = ParametricMemoryRetriever(memory="my-memory", k=1)
    docs = retriever.invoke("When is the Quillhaven festival?")
    docs[0].metadata  # {"source": "parametric-memory", "memory": ..., "document_ids": [...],
                      #  "recalled": True, "kind": "recall", "prompt": ...}
    ```
    """

    memory: ParametricMemory
    """The memory, or the path of a memory folder (opened once per process)."""
    k: int = Field(default=1, ge=1, le=16)
    """Most documents returned per query (one generation each)."""
    max_new_tokens: int = Field(default=192, ge=1)
    """Longest recalled text per document, in tokens."""

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)


def recall_documents(
    memory: ParametricMemory, query: str, k: int, max_new_tokens: int
) -> list[Document]:
    return [
        Document(page_content=p.text, metadata=passage_metadata(memory, p))
        for p in recall_passages(memory, query, k, max_new_tokens)
    ]
