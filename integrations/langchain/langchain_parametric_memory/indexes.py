"""`ParametricMemoryIndex`: a LangChain `DocumentIndex` whose writes consolidate documents
into the memory's adapter, so `langchain_core.indexing.index(...)` (with a record manager
and incremental cleanup) keeps a memory in sync with a document source."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.indexing.base import DeleteResponse, DocumentIndex, UpsertResponse
from pydantic import ConfigDict, Field, model_validator

from parametric_memory import DocumentNotFoundError, MemoryConfig, ParametricMemory
from parametric_memory import store as memory_store
from parametric_memory.documents import content_hash, validate_text

from ._memory import METADATA_KEY, TEXT_KEY, model_lock, open_memory_input
from ._memory import decode_metadata as _decode
from .retrievers import RecallRetrieval, fold_search_kwargs

logger = logging.getLogger(__name__)


class ParametricMemoryIndex(RecallRetrieval, DocumentIndex):
    """Upsert, delete and get LangChain documents in a parametric memory; retrieve by recall.

    - `upsert` consolidates new documents (one memory commit per document). A document whose
      id is held with other content or other metadata is replaced (deleted, which retrains
      the adapter, then added again). The memory holds each distinct text once: content
      already held under another id moves to the new id (the old id is deleted), so
      `index(..., cleanup="incremental")` never deletes content that is still wanted.
    - `delete` calls `memory.delete_document` per id (each one retrains the adapter on the
      remaining documents); ids not held are not errors.
    - `get` returns held documents with their metadata. The memory keeps no copy of a
      document's text except its chunks, so by default `page_content` is rebuilt from them:
      sentences joined with single spaces (paragraph breaks and the whitespace between
      sentences are not kept; the text is NFC-normalised as the memory stores it). Set
      `store_text=True` to keep the exact text in the memory's manifest as well.
    - Retrieval (`invoke`) is `ParametricMemoryRetriever`'s: text recalled from the weights.
    """

    memory: ParametricMemory
    """The memory, or the path of a memory folder (opened once per process)."""
    memory_config: MemoryConfig | None = None
    """With a folder that holds no memory yet: make one there with this config."""
    k: int = Field(default=1, ge=0, le=16)
    """Most documents returned per query when used as a retriever."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """As `vectorstore.as_retriever(search_kwargs=...)`: only `{"k": n}`, which sets `k`."""
    max_new_tokens: int = Field(default=192, ge=1)
    store_text: bool = False
    """Keep each document's exact text in the memory's metadata (so `get` returns it
    verbatim). Off by default: the manifest would hold a second copy of every document."""
    progress: bool = False
    """Show the memory's consolidation progress bar."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _search_kwargs(cls, data: Any) -> Any:
        return open_memory_input(fold_search_kwargs(data, cls.__name__))

    # --- writing ------------------------------------------------------------------------
    def upsert(self, items: Sequence[Document], /, **kwargs: Any) -> UpsertResponse:
        planned: dict[str, tuple[str, str, dict[str, str]]] = {}
        order: list[str] = []
        for item in items:
            doc_id = item.id or str(uuid.uuid4())
            text = validate_text(item.page_content, f"document {doc_id!r}")
            planned[doc_id] = (text, content_hash(text), self._encode(item.metadata, text))
            if doc_id not in order:
                order.append(doc_id)
        # One id per distinct text within the call: the last one wins.
        last_by_hash = {digest: doc_id for doc_id, (_, digest, _) in planned.items()}
        failed = [d for d, (_, digest, _) in planned.items() if last_by_hash[digest] != d]
        for doc_id in failed:
            logger.warning(
                "document %r has the same text as another document of this upsert; "
                "the memory holds each text once, under the last id",
                doc_id,
            )
            del planned[doc_id]
        with model_lock(self.memory):
            held = self.memory.documents
            holder = {record.content_hash: doc_id for doc_id, record in held.items()}
            to_delete: dict[str, None] = {}  # an ordered set
            to_add: list[str] = []
            for doc_id, (_, digest, metadata) in planned.items():
                record = held.get(doc_id)
                if record and _unchanged(record, digest, metadata):
                    continue
                if record:
                    to_delete[doc_id] = None
                other = holder.get(digest)
                if other is not None and other != doc_id:
                    logger.info("moving the held text of %r to id %r", other, doc_id)
                    to_delete[other] = None
                to_add.append(doc_id)
            for doc_id in to_delete:
                self.memory.delete_document(doc_id, progress=self.progress)
            if to_add:
                self.memory.add_documents(
                    [planned[d][0] for d in to_add],
                    ids=to_add,
                    metadatas=[planned[d][2] for d in to_add],
                    progress=self.progress,
                )
            held = self.memory.documents
        succeeded = [d for d in order if d in planned and d in held]
        failed += [d for d in order if d in planned and d not in held]
        return UpsertResponse(succeeded=succeeded, failed=failed)

    async def aupsert(self, items: Sequence[Document], /, **kwargs: Any) -> UpsertResponse:
        return await asyncio.to_thread(self.upsert, items, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> DeleteResponse:
        if ids is None:
            raise ValueError("ParametricMemoryIndex.delete needs a list of ids")
        deleted: list[str] = []
        with model_lock(self.memory):
            for doc_id in dict.fromkeys(ids):
                if doc_id not in self.memory.documents:
                    continue
                try:
                    self.memory.delete_document(doc_id, progress=self.progress)
                except DocumentNotFoundError:  # deleted by another writer meanwhile
                    continue
                deleted.append(doc_id)
        return DeleteResponse(num_deleted=len(deleted), succeeded=deleted, num_failed=0, failed=[])

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> DeleteResponse:
        return await asyncio.to_thread(self.delete, ids, **kwargs)

    # --- reading ------------------------------------------------------------------------
    def get(self, ids: Sequence[str], /, **kwargs: Any) -> list[Document]:
        held = self.memory.documents
        wanted = [doc_id for doc_id in dict.fromkeys(ids) if doc_id in held]
        if not wanted:
            return []
        texts: dict[str, str] = {}
        if any(TEXT_KEY not in held[d].metadata for d in wanted):
            texts = self._texts_from_chunks(set(wanted))
        documents = []
        for doc_id in wanted:
            stored = held[doc_id].metadata
            text = stored.get(TEXT_KEY, texts.get(doc_id, ""))
            documents.append(Document(id=doc_id, page_content=text, metadata=_decode(stored)))
        return documents

    async def aget(self, ids: Sequence[str], /, **kwargs: Any) -> list[Document]:
        return await asyncio.to_thread(self.get, ids, **kwargs)

    # --- helpers ------------------------------------------------------------------------
    def _encode(self, metadata: dict[str, Any], text: str) -> dict[str, str]:
        encoded = {
            str(key): str(value)
            for key, value in metadata.items()
            if isinstance(value, (str, int, float, bool)) and key not in (METADATA_KEY, TEXT_KEY)
        }
        encoded[METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=str)
        if self.store_text:
            encoded[TEXT_KEY] = text
        return encoded

    def _texts_from_chunks(self, ids: set[str]) -> dict[str, str]:
        """Each document's chunks, in order, joined with spaces (read from the committed
        state on disk; the memory keeps no other copy of the text)."""
        manifest = memory_store.read_manifest(self.memory.root)
        pieces: dict[str, list[tuple[int, str]]] = {}
        for chunk in memory_store.read_chunks(self.memory.root, manifest):
            if chunk.document_id in ids:
                pieces.setdefault(chunk.document_id, []).append((chunk.index, chunk.text))
        return {d: " ".join(text for _, text in sorted(p)) for d, p in pieces.items()}


def _unchanged(record: memory_store.DocumentRecord, digest: str, metadata: dict[str, str]) -> bool:
    """Whether a held document already is this text with this (encoded) metadata: as this
    index stores it, or as string metadata that decodes the same (a document added with
    `memory.add_documents` or `add_files`), which is then left alone rather than retrained."""
    if record.content_hash != digest:
        return False
    if record.metadata == metadata:
        return True
    keeps_text = TEXT_KEY not in metadata or TEXT_KEY in record.metadata
    return keeps_text and _decode(record.metadata) == _decode(metadata)
