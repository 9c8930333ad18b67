"""`ParametricMemoryIndex`: an index a LlamaIndex user already knows (`from_documents`,
`insert`, `delete_ref_doc`, `refresh_ref_docs`, `as_retriever`, `as_query_engine`,
`as_chat_engine`) whose store is a parametric memory: documents are consolidated into a
LoRA adapter and the memory's model answers from its weights."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import (
    CondensePlusContextChatEngine,
    CondenseQuestionChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.chat_engine.types import BaseChatEngine, ChatMode
from llama_index.core.data_structs.data_structs import IndexDict
from llama_index.core.indices.managed.base import BaseManagedIndex
from llama_index.core.ingestion import run_transformations
from llama_index.core.llms import LLM
from llama_index.core.llms.utils import LLMType, resolve_llm
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import BaseNode, Document, TransformComponent
from llama_index.core.storage.docstore.types import RefDocInfo
from llama_index.core.storage.storage_context import StorageContext
from llama_index.ingestion.parametric_memory import REF_DOC_HASH, ParametricMemoryTransform
from llama_index.llms.parametric_memory import ParametricMemoryLLM
from llama_index.query_engine.parametric_memory import ParametricMemoryQueryEngine
from llama_index.retrievers.parametric_memory import ParametricMemoryRetriever

from parametric_memory import MemoryConfig, ParametricMemory
from parametric_memory.integration import resolve_memory

logger = logging.getLogger(__name__)

_RETRIEVAL_ARGS = ("similarity_top_k",)
"""Keyword arguments of `as_query_engine` / `as_chat_engine` meant for the retriever (and
`max_new_tokens` too where another LLM answers: the memory only recalls)."""
_ANSWER_ARGS = ("streaming", "max_new_tokens")
"""Keyword arguments of `as_query_engine` for the memory's own query engine."""
_LLM_ARGS = ("max_new_tokens", "history_turns", "context_window")
"""Keyword arguments of `as_chat_engine` for the memory's own LLM."""


class ParametricMemoryIndex(BaseManagedIndex):
    """A parametric memory behind the index API: swap `VectorStoreIndex.from_documents(docs)`
    for `ParametricMemoryIndex.from_documents(docs, memory_path="my-memory")` and keep
    `as_query_engine()`, `as_chat_engine()`, `as_retriever()`, `insert`, `delete_ref_doc`,
    `refresh_ref_docs`.

    Why a `BaseManagedIndex` (a `BaseIndex`): core's base for an index whose service decides
    how documents become nodes (Vectara, LlamaCloud, ...), which is the case here: the
    memory chunks and consolidates each whole document itself. So the index works wherever
    a `BaseIndex` is expected; its `index_struct` is a bare `IndexDict` (id: the memory's
    folder) and its `storage_context` a default in-memory one that stays empty: `docstore`
    holds no nodes (the memory keeps none; `ref_doc_info` lists the documents it holds),
    and the memory folder, not `storage_context.persist()`, is what persists: open it again
    with `ParametricMemoryIndex(memory="my-memory")` or the same `from_documents` call.

    Writes go through a `ParametricMemoryTransform` (after the `transformations` given, by
    default none: splitting first changes nothing, the splits are joined again): one memory
    document per source document (`ref_doc_id`), a document held in the same version
    (`ref_doc_hash`, the source `Document.hash`) left alone, one held in another version
    replaced. Every write trains (seconds on a GPU, minutes on a CPU).

    Reads: `as_retriever` is a `ParametricMemoryRetriever` (recalled text, source
    metadata); `as_query_engine()` a `ParametricMemoryQueryEngine` (the answer from the
    weights, no context in the prompt); `as_query_engine(llm=...)` core's
    `RetrieverQueryEngine` where that LLM reads the recalled passages; `as_chat_engine()`
    chats with the memory's LLM (see there for the modes).
    """

    def __init__(
        self,
        memory: ParametricMemory | str | os.PathLike[str],
        transformations: list[TransformComponent] | None = None,
        storage_context: StorageContext | None = None,
        callback_manager: CallbackManager | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> None:
        self._memory = resolve_memory(memory)
        self._transform = ParametricMemoryTransform(memory=self._memory, progress=show_progress)
        root = str(self._memory.root)
        super().__init__(
            index_struct=IndexDict(index_id=root, summary=f"Parametric memory at {root}"),
            storage_context=storage_context,
            callback_manager=callback_manager,
            # never empty, so BaseIndex does not fall back to Settings' splitter
            transformations=[*(transformations or []), self._transform],
            show_progress=show_progress,
            **kwargs,
        )

    @classmethod
    def from_documents(  # type: ignore[override]
        cls,
        documents: Sequence[Document],
        storage_context: StorageContext | None = None,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        transformations: list[TransformComponent] | None = None,
        *,
        memory_path: str | os.PathLike[str] | None = None,
        config: MemoryConfig | None = None,
        **kwargs: Any,
    ) -> ParametricMemoryIndex:
        """Open the memory at `memory_path` (or create it there with `config`) and write
        the documents into it: new ones are learned, changed ones relearned, unchanged
        ones left alone (no training), held ones not given kept."""
        if memory_path is None:
            raise TypeError("ParametricMemoryIndex.from_documents needs memory_path= (a folder)")
        index = cls(
            resolve_memory(memory_path, config, create=True),
            transformations=transformations,
            storage_context=storage_context,
            callback_manager=callback_manager,
            show_progress=show_progress,
            **kwargs,
        )
        with index._callback_manager.as_trace("index_construction"):
            index._consolidate(documents)
        return index

    @property
    def memory(self) -> ParametricMemory:
        return self._memory

    @property
    def ref_doc_info(self) -> dict[str, RefDocInfo]:
        """The documents the memory holds, by id (a source document's `ref_doc_id`), with
        the metadata they were consolidated with; `node_ids` are empty: no nodes are kept."""
        return {
            doc_id: RefDocInfo(node_ids=[], metadata=dict(record.metadata))
            for doc_id, record in self._memory.documents.items()
        }

    # --- writing ------------------------------------------------------------------------
    def _consolidate(self, documents: Sequence[BaseNode]) -> None:
        """The transformations, the last of which consolidates into the memory."""
        run_transformations(
            list(documents), self._transformations, show_progress=self._show_progress
        )

    def _insert(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        self._transform.consolidate(nodes)

    def insert(self, document: Document, **insert_kwargs: Any) -> None:
        """Learn a document (relearn it if held in another version; unchanged: no-op)."""
        with self._callback_manager.as_trace("insert"):
            self._consolidate([document])

    async def ainsert(self, document: Document, **insert_kwargs: Any) -> None:
        await asyncio.to_thread(self.insert, document)

    def insert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        """Learn already split nodes, one memory document per `ref_doc_id`; all nodes of a
        document must come in one call. No docstore copy is kept."""
        with self._callback_manager.as_trace("insert_nodes"):
            self._insert(nodes)

    async def ainsert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        await asyncio.to_thread(self.insert_nodes, nodes)

    def update_ref_doc(self, document: Document, **update_kwargs: Any) -> None:
        """Replace a held document by this version (`insert` does; unchanged: no-op)."""
        self.insert(document)

    async def aupdate_ref_doc(self, document: Document, **update_kwargs: Any) -> None:
        await self.ainsert(document)

    def refresh_ref_docs(self, documents: Sequence[Document], **update_kwargs: Any) -> list[bool]:
        """As `BaseIndex.refresh_ref_docs`: documents whose `Document.hash` the memory does
        not hold go through the transformations and are (re)learned; returns for each
        document whether the memory holds another record of it now."""
        held = self._memory.documents
        stale = {d.id_: d for d in documents if _held_hash(held, d.id_) != d.hash}
        with self._callback_manager.as_trace("refresh_ref_docs"):
            self._consolidate(list(stale.values()))
        now = self._memory.documents
        return [d.id_ in stale and now.get(d.id_) != held.get(d.id_) for d in documents]

    async def arefresh_ref_docs(
        self, documents: Sequence[Document], **update_kwargs: Any
    ) -> list[bool]:
        return await asyncio.to_thread(self.refresh_ref_docs, documents)

    def delete_ref_doc(
        self, ref_doc_id: str, delete_from_docstore: bool = False, **delete_kwargs: Any
    ) -> None:
        """Forget a document (its shard is retrained without it); an id the memory does not
        hold is logged, not raised, as `BaseIndex` does."""
        self._transform.delete_ref_doc(ref_doc_id)

    async def adelete_ref_doc(
        self, ref_doc_id: str, delete_from_docstore: bool = False, **delete_kwargs: Any
    ) -> None:
        await self._transform.adelete_ref_doc(ref_doc_id)

    def _delete_node(self, node_id: str, **delete_kwargs: Any) -> None:
        raise NotImplementedError(
            "a parametric memory holds documents, not nodes: use delete_ref_doc(ref_doc_id)"
        )

    # --- reading ------------------------------------------------------------------------
    def as_retriever(self, **kwargs: Any) -> ParametricMemoryRetriever:
        """A `ParametricMemoryRetriever` (`similarity_top_k`, `max_new_tokens`, ...)."""
        kwargs.setdefault("callback_manager", self._callback_manager)
        return ParametricMemoryRetriever(self._memory, **kwargs)

    def as_query_engine(self, llm: LLMType | None = None, **kwargs: Any) -> BaseQueryEngine:
        """Without `llm`: a `ParametricMemoryQueryEngine` (`streaming`, `max_new_tokens`),
        answering from the weights; `Settings.llm` is not used, and retrieval or synthesis
        arguments are ignored with a warning. With `llm`: core's `RetrieverQueryEngine`
        over `as_retriever(similarity_top_k=...)`, that LLM reading the recalled passages
        (`max_new_tokens` sizes each recalled passage; the other arguments go to
        `RetrieverQueryEngine.from_args`)."""
        kwargs.setdefault("callback_manager", self._callback_manager)
        if llm is not None:
            retriever = self.as_retriever(**_retrieval_args(kwargs, llm))
            return RetrieverQueryEngine.from_args(retriever, llm=self._resolve(llm), **kwargs)
        own = _take(kwargs, (*_ANSWER_ARGS, "callback_manager"))
        if kwargs:
            logger.warning(
                "as_query_engine() answers from the memory's weights and ignores %s; pass "
                "llm= to have an LLM read recalled passages",
                ", ".join(sorted(kwargs)),
            )
        return ParametricMemoryQueryEngine(memory=self._memory, **own)

    def as_chat_engine(
        self,
        chat_mode: ChatMode | str = ChatMode.BEST,
        llm: LLMType | None = None,
        **kwargs: Any,
    ) -> BaseChatEngine:
        """A chat engine; its LLM is the memory's (`ParametricMemoryLLM`: `max_new_tokens`,
        `history_turns`) unless `llm` is given (then `similarity_top_k` and
        `max_new_tokens` size what the memory recalls for it).

        `BEST` (the default) picks what fits the LLM: with the memory's, `SIMPLE` (each
        turn is one question to the memory, the last exchanges folded in: the answer
        comes from the weights, one generation a turn); with another `llm`,
        `CONDENSE_PLUS_CONTEXT` (that LLM condenses the question and reads what the
        memory recalls), as core's `BEST`. `CONTEXT`, `CONDENSE_PLUS_CONTEXT` and
        `CONDENSE_QUESTION` (over `as_query_engine(llm=llm)`) work with either LLM, but
        with the memory's they put recalled text or a rewrite prompt before a small model
        trained on bare questions, costing more generations a turn. `REACT` and `OPENAI`
        are gone from core: use an agent with a query engine tool.
        """
        mode = _chat_mode(chat_mode, llm)
        retrieval = _retrieval_args(kwargs, llm)
        chat_llm = (
            self._memory_llm(**_take(kwargs, _LLM_ARGS)) if llm is None else self._resolve(llm)
        )
        if mode == ChatMode.SIMPLE:
            return SimpleChatEngine.from_defaults(llm=chat_llm, **kwargs)
        if mode == ChatMode.CONDENSE_QUESTION:
            engine = self._condensed_engine(llm, chat_llm, retrieval)
            return CondenseQuestionChatEngine.from_defaults(engine, llm=chat_llm, **kwargs)
        chat_cls = ContextChatEngine if mode == ChatMode.CONTEXT else CondensePlusContextChatEngine
        retriever = self.as_retriever(**retrieval)
        return chat_cls.from_defaults(retriever=retriever, llm=chat_llm, **kwargs)

    def _condensed_engine(
        self, llm: LLMType | None, chat_llm: LLM, retrieval: dict[str, Any]
    ) -> BaseQueryEngine:
        """What `CONDENSE_QUESTION` asks the condensed question: the memory (answers as
        long as its chat LLM's), or another `llm` reading recalled passages."""
        if llm is not None:
            return self.as_query_engine(llm=llm, **retrieval)
        return self.as_query_engine(max_new_tokens=chat_llm.metadata.num_output)

    def _memory_llm(self, **kwargs: Any) -> ParametricMemoryLLM:
        return ParametricMemoryLLM(
            memory=self._memory, callback_manager=self._callback_manager, **kwargs
        )

    def _resolve(self, llm: LLMType) -> LLM:
        return resolve_llm(llm, callback_manager=self._callback_manager)


def _held_hash(held: dict[str, Any], doc_id: str) -> str | None:
    """The source `Document.hash` a held memory document was consolidated from."""
    record = held.get(doc_id)
    return record.metadata.get(REF_DOC_HASH) if record is not None else None


def _chat_mode(chat_mode: ChatMode | str, llm: LLMType | None) -> ChatMode:
    """The chat mode asked for, `BEST` resolved: `SIMPLE` with the memory's LLM,
    `CONDENSE_PLUS_CONTEXT` (core's `BEST`) with another."""
    mode = ChatMode(chat_mode)
    if mode in (ChatMode.REACT, ChatMode.OPENAI):
        raise ValueError(f"chat mode {mode.value!r} was removed from LlamaIndex; use an agent")
    if mode == ChatMode.BEST:
        return ChatMode.SIMPLE if llm is None else ChatMode.CONDENSE_PLUS_CONTEXT
    return mode


def _retrieval_args(kwargs: dict[str, Any], llm: LLMType | None) -> dict[str, Any]:
    """The retriever's share of `kwargs`, removed from them: `similarity_top_k`, and
    `max_new_tokens` where another LLM answers (the memory's own generations are recalls)."""
    return _take(kwargs, _RETRIEVAL_ARGS if llm is None else (*_RETRIEVAL_ARGS, "max_new_tokens"))


def _take(kwargs: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Remove and return the entries of `kwargs` under `keys`."""
    return {key: kwargs.pop(key) for key in keys if key in kwargs}
