"""`ParametricMemoryVectorStore`: a LangChain `VectorStore` over a parametric memory, so a
RAG pipeline swaps its vector store in one line. Writes consolidate documents into the
memory's adapter (`ParametricMemoryIndex`); searches recall text from the weights (as
`ParametricMemoryRetriever` does). No embeddings are involved anywhere."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from typing_extensions import Self

from parametric_memory import MemoryConfig, ParametricMemory
from parametric_memory.documents import content_hash, validate_text

from ._memory import open_memory
from .indexes import ParametricMemoryIndex
from .retrievers import ParametricMemoryRetriever, check_k, recall_documents

DEFAULT_K = 4
"""Documents per search unless a call says otherwise: a vector store's usual default (each
document is one generation: pass k=1 for the memory's recollection alone)."""
STORE_KWARGS = ("memory", "memory_config", "max_new_tokens", "store_text", "progress")
"""The keywords `from_texts` / `from_documents` take besides `memory_path` (the constructor's)."""
_T = TypeVar("_T")
_warned_of_embedding = False


class ParametricMemoryVectorStore(VectorStore):
    """A parametric memory behind LangChain's `VectorStore` interface.

    ```python
    # before: vectorstore = Chroma.from_documents(docs, OpenAIEmbeddings())
    vectorstore = ParametricMemoryVectorStore.from_documents(docs, memory_path="my-memory")
    retriever = vectorstore.as_retriever(search_kwargs={"k": 2})  # the rest is unchanged
    ```

    - `from_texts` / `from_documents` make a memory in `memory_path` (with `memory_config`,
      by default `MemoryConfig()`), or open the one it holds, and add the documents. An
      `embedding` is accepted and ignored (with one warning per process): a memory needs none.
    - `add_texts` / `add_documents` consolidate documents (each one trains the adapter) and
      return their ids: the `ids` given, else each document's `id`, else the id under which
      the memory already holds that text, else the id the memory itself would give (its
      content hash). Text and metadata already held under an id are left alone, so adding
      the same documents again changes nothing. The memory holds each text once (see
      `ParametricMemoryIndex.upsert`): a text given under two ids is held, and its id
      returned, under the last one only.
    - `delete(ids)` forgets documents (retraining on the rest); `get_by_ids` returns held
      documents (`page_content` rebuilt from the memory's chunks unless `store_text=True`).
    - `similarity_search(query, k)` returns up to `k` texts the memory writes out about the
      query (not stored passages), each with the metadata of the held document it matches
      best plus its provenance; `similarity_search_with_score` adds a rank-based score
      (1.0, 1/2, 1/3, ...): a memory measures no similarity, the score only orders.
      Filters, MMR and vector search are refused with an error that says so.
    - `as_retriever(**kwargs)` is a `ParametricMemoryRetriever` (`search_kwargs={"k": n}`).
    """

    def __init__(
        self,
        memory: ParametricMemory | str | os.PathLike[str],
        *,
        memory_config: MemoryConfig | None = None,
        max_new_tokens: int = 192,
        store_text: bool = False,
        progress: bool = False,
        embedding: Embeddings | None = None,
    ) -> None:
        """`memory`: a `ParametricMemory`, or a folder, opened once per process or, when it
        holds no memory yet, made into one with `memory_config` (default `MemoryConfig()`)."""
        _ignore_embedding(embedding, stacklevel=3)
        self._index = ParametricMemoryIndex(
            memory=open_memory(memory, memory_config, create=True),
            max_new_tokens=max_new_tokens,
            store_text=store_text,
            progress=progress,
        )

    @property
    def memory(self) -> ParametricMemory:
        return self._index.memory

    @property
    def max_new_tokens(self) -> int:
        """Longest recalled text per document, in tokens."""
        return self._index.max_new_tokens

    @property
    def embeddings(self) -> Embeddings | None:
        """None: a parametric memory needs no embeddings."""
        return None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """Create (or open) the memory in `memory_path` and add `texts` to it."""
        store = cls._for_memory("from_texts", embedding, kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_documents(
        cls, documents: list[Document], embedding: Embeddings | None = None, **kwargs: Any
    ) -> Self:
        """Create (or open) the memory in `memory_path` and add `documents` to it."""
        ids = kwargs.pop("ids", None)
        store = cls._for_memory("from_documents", embedding, kwargs)
        store.add_documents(documents, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        return await asyncio.to_thread(
            cls.from_texts, texts, embedding, metadatas, ids=ids, **kwargs
        )

    @classmethod
    async def afrom_documents(
        cls, documents: list[Document], embedding: Embeddings | None = None, **kwargs: Any
    ) -> Self:
        return await asyncio.to_thread(cls.from_documents, documents, embedding, **kwargs)

    @classmethod
    def _for_memory(cls, method: str, embedding: Any, kwargs: dict[str, Any]) -> Self:
        _ignore_embedding(embedding, stacklevel=4)
        owner = f"{cls.__name__}.{method}()"
        if "memory_path" in kwargs:
            if "memory" in kwargs:
                raise TypeError(f"{owner} got memory_path and memory: give one of them")
            kwargs["memory"] = kwargs.pop("memory_path")
        unknown = sorted(set(kwargs) - set(STORE_KWARGS))
        if unknown:
            raise TypeError(
                f"{owner} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}: "
                "it takes memory_path (the memory's folder), memory_config, max_new_tokens, "
                "store_text and progress"
            )
        if kwargs.get("memory") is None:
            raise TypeError(
                f"{owner} needs memory_path=, the folder of the memory to make (or to open, "
                "if it holds one already); a parametric memory needs no embeddings"
            )
        return cls(**kwargs)

    # --- writing ------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        if isinstance(texts, str):
            raise TypeError(f"{self._name}.add_texts() takes a list of texts, got one str")
        _refuse(kwargs, f"{self._name}.add_texts()", "metadatas", "ids")
        texts = list(texts)
        metadatas = _aligned(metadatas, len(texts), "metadatas", self._name)
        documents = [
            Document(page_content=text, metadata=(metadatas[i] if metadatas else None) or {})
            for i, text in enumerate(texts)
        ]
        return self.add_documents(documents, ids=ids)

    def add_documents(
        self,
        documents: list[Document],
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        _refuse(kwargs, f"{self._name}.add_documents()", "ids")
        ids = _aligned(ids, len(documents), "ids", self._name)
        wanted = self._with_ids(documents, ids)
        held = set(self._index.upsert(wanted)["succeeded"])
        return [doc.id for doc in wanted if doc.id in held]

    def _with_ids(
        self, documents: Sequence[Document], ids: Sequence[str | None] | None
    ) -> list[Document]:
        """Copies of `documents` (the caller's are left as they are) with their ids."""
        holders = {record.content_hash: d for d, record in self.memory.documents.items()}
        copies = []
        for i, doc in enumerate(documents):
            doc_id = (ids[i] if ids else None) or doc.id
            if not doc_id:
                digest = content_hash(validate_text(doc.page_content, f"document #{i}"))
                doc_id = holders.get(digest, digest[:12])  # `add_documents`' own default id
            copies.append(Document(id=doc_id, page_content=doc.page_content, metadata=doc.metadata))
        return copies

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        _refuse(kwargs, f"{self._name}.delete()")
        if ids is None:
            raise ValueError(
                f"{self._name}.delete() needs a list of ids (each deletion retrains the "
                "adapter; to drop everything, start a new memory folder)"
            )
        self._index.delete(list(ids))
        return True

    # --- reading ------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return self._index.get(ids)

    def similarity_search(self, query: str, k: int = DEFAULT_K, **kwargs: Any) -> list[Document]:
        _refuse(kwargs, f"{self._name}.similarity_search()", "k")
        return recall_documents(self.memory, query, check_k(k, self._name), self.max_new_tokens)

    def similarity_search_with_score(
        self, query: str, k: int = DEFAULT_K, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        documents = self.similarity_search(query, k, **kwargs)
        return [(doc, 1.0 / rank) for rank, doc in enumerate(documents, start=1)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return _same_score  # the scores already lie in (0, 1], higher is more relevant

    def as_retriever(self, **kwargs: Any) -> ParametricMemoryRetriever:  # type: ignore[override]
        """A `ParametricMemoryRetriever` over this memory: `search_kwargs={"k": n}` (default
        4, as a vector store's retriever) and the retriever's own fields."""
        search_type = kwargs.pop("search_type", "similarity")
        if search_type != "similarity":
            raise ValueError(
                f"{self._name}.as_retriever(): search_type {search_type!r} not supported: a "
                "parametric memory recalls from its weights (no scores to threshold, no MMR)"
            )
        search = kwargs.get("search_kwargs")
        if "k" not in kwargs and not (isinstance(search, dict) and "k" in search):
            kwargs["k"] = DEFAULT_K
        kwargs.setdefault("tags", self._get_retriever_tags())
        kwargs.setdefault("max_new_tokens", self.max_new_tokens)
        return ParametricMemoryRetriever(memory=self.memory, **kwargs)

    # --- no vectors ---------------------------------------------------------------------
    def similarity_search_by_vector(
        self, embedding: list[float], k: int = DEFAULT_K, **kwargs: Any
    ) -> list[Document]:
        raise self._no_vectors("similarity_search_by_vector")

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        raise self._no_vectors("max_marginal_relevance_search")

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        raise self._no_vectors("max_marginal_relevance_search_by_vector")

    def _no_vectors(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{self._name}.{method}(): a parametric memory has no vectors (it recalls from "
            "its weights); use similarity_search(query, k)"
        )

    @property
    def _name(self) -> str:
        return type(self).__name__


def _ignore_embedding(embedding: object, *, stacklevel: int) -> None:
    """Callers pass an embedding out of habit: accepted and ignored, with one warning."""
    global _warned_of_embedding
    if embedding is None or _warned_of_embedding:
        return
    _warned_of_embedding = True
    warnings.warn(
        "ParametricMemoryVectorStore ignores `embedding`: a parametric memory needs no "
        "embeddings (documents are trained into the model's adapter); pass embedding=None",
        UserWarning,
        stacklevel=stacklevel,
    )


def _aligned(values: Sequence[_T] | None, count: int, name: str, owner: str) -> Sequence[_T] | None:
    if values is not None and len(values) != count:
        raise ValueError(f"{owner}: got {count} documents but {len(values)} {name}")
    return values


def _refuse(kwargs: dict[str, Any], call: str, *takes: str) -> None:
    if kwargs:
        names = ", ".join(map(repr, sorted(kwargs)))
        takes_text = f"; it takes {', '.join(takes)}" if takes else ""
        raise TypeError(
            f"{call} got unexpected keyword argument(s) {names}: a parametric memory recalls "
            f"from its weights (no filters, scores or vectors){takes_text}"
        )


def _same_score(score: float) -> float:
    return score
