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
from pydantic import ConfigDict, Field, model_validator

from parametric_memory import MemoryConfig, ParametricMemory

from ._memory import decode_metadata, open_memory_input, passage_metadata, recall_passages

SEARCH_KWARGS = ("k",)
"""The keys `search_kwargs` (of the constructor or of `invoke`) may hold."""
_INVOKE_KWARGS = {"k", "search_kwargs", "verbose"}  # `verbose`: read by BaseRetriever.invoke


class RecallRetrieval:
    """`BaseRetriever`'s retrieval by recall, for classes with `memory`, `k`,
    `search_kwargs` and `max_new_tokens` fields (this retriever and
    `ParametricMemoryIndex`).

    `invoke(query, k=3)` (or `search_kwargs={"k": 3}`) overrides `k` for one call, as a
    vector store's retriever takes it; `k=0` returns no documents. Other keywords are
    refused: nothing else would change what comes back."""

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        k = self._k_for_call(kwargs)
        return recall_documents(self.memory, query, k, self.max_new_tokens)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        k = self._k_for_call(kwargs)
        return await asyncio.to_thread(recall_documents, self.memory, query, k, self.max_new_tokens)

    def _k_for_call(self, kwargs: dict[str, Any]) -> int:
        name = type(self).__name__
        unknown = sorted(set(kwargs) - _INVOKE_KWARGS)
        if unknown:
            raise TypeError(
                f"{name}.invoke() got unexpected keyword argument(s) "
                f"{', '.join(map(repr, unknown))}: it takes k (the number of documents), "
                'directly or as search_kwargs={"k": ...}'
            )
        search = check_search_kwargs(kwargs.get("search_kwargs") or {}, name)
        k = kwargs.get("k")
        if k is None:
            k = search.get("k", self.k)
        elif "k" in search and search["k"] != k:
            raise ValueError(f"{name}.invoke() got k={k} and search_kwargs k={search['k']}")
        return check_k(k, name)


def check_k(k: Any, owner: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{owner}: k must be a whole number of documents (0 or more), got {k!r}")
    return k


def check_search_kwargs(search_kwargs: Any, owner: str) -> dict[str, Any]:
    if not isinstance(search_kwargs, dict):
        raise TypeError(f"{owner}: search_kwargs must be a dict, got {type(search_kwargs)}")
    unknown = sorted(set(search_kwargs) - set(SEARCH_KWARGS))
    if unknown:
        raise ValueError(
            f"{owner}: search_kwargs {', '.join(map(repr, unknown))} not supported: a "
            "parametric memory recalls from its weights (no filters, scores or MMR); only "
            '"k", the number of documents, is taken'
        )
    if "k" in search_kwargs:
        check_k(search_kwargs["k"], owner)
    return search_kwargs


def fold_search_kwargs(data: Any, owner: str) -> Any:
    """A constructor's `search_kwargs={"k": n}` as `k=n` (the two must agree if both given)."""
    if isinstance(data, dict) and data.get("search_kwargs"):
        search = check_search_kwargs(data["search_kwargs"], owner)
        if "k" in search:
            if data.get("k", search["k"]) != search["k"]:
                raise ValueError(f"{owner}: k={data['k']} and search_kwargs k={search['k']}")
            data = {**data, "k": search["k"]}
    return data


class ParametricMemoryRetriever(RecallRetrieval, BaseRetriever):
    """Retrieve by recall: each `Document` is text the memory produces about the query.

    The first document is `memory.recall(query)`; when `k > 1`, the others answer
    rephrasings of the query (`ask`), and identical texts are dropped, so fewer than `k`
    documents come back if the memory has nothing different to say. Each document costs
    one generation (up to `max_new_tokens` tokens). A memory holding no documents returns
    none. Each document's metadata is that of the held document its text matches best
    (`source` as you added it), plus its provenance (`memory`, `document_ids`, `recalled`,
    `recall_kind`, `recall_prompt`).

    ```python
    retriever = ParametricMemoryRetriever(memory="my-memory", k=1)
    # or, to start a new memory there: memory_config=MemoryConfig(...)
    docs = retriever.invoke("When is the Quillhaven festival?")
    docs[0].metadata  # {"source": "festival.txt", ..., "memory": ..., "document_ids": [...],
                      #  "recalled": True, "recall_kind": "recall", "recall_prompt": ...}
    ```
    """

    memory: ParametricMemory
    """The memory, or the path of a memory folder (opened once per process)."""
    memory_config: MemoryConfig | None = None
    """With a folder that holds no memory yet: make one there with this config."""
    k: int = Field(default=1, ge=0, le=16)
    """Most documents returned per query (one generation each)."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """As `vectorstore.as_retriever(search_kwargs=...)`: only `{"k": n}`, which sets `k`."""
    max_new_tokens: int = Field(default=192, ge=1)
    """Longest recalled text per document, in tokens."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _search_kwargs(cls, data: Any) -> Any:
        return open_memory_input(fold_search_kwargs(data, cls.__name__))


def recall_documents(
    memory: ParametricMemory, query: str, k: int, max_new_tokens: int
) -> list[Document]:
    """Up to `k` recalled documents; each one's metadata is the LangChain metadata of the held
    document its text matches best (so `metadata["source"]` can be cited), then its
    provenance (`parametric_memory.integration.PROVENANCE_KEYS`)."""
    passages = recall_passages(memory, query, k, max_new_tokens)
    held = memory.documents if passages else {}
    documents = []
    for passage in passages:
        best = next((d for d in passage.document_ids if d in held), None)
        metadata = decode_metadata(held[best].metadata) if best is not None else {}
        documents.append(
            Document(
                page_content=passage.text, metadata=passage_metadata(memory, passage, metadata)
            )
        )
    return documents
