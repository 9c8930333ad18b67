"""`ParametricMemoryBlock`: long-term memory for `llama_index.core.memory.Memory` that
recalls from a parametric memory's weights and consolidates flushed conversation into it."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from datetime import datetime, timezone
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.memory.memory import BaseMemoryBlock

from parametric_memory import IngestReport, ParametricMemory

from ._shared import last_user_text, model_lock, resolve_memory, transcript


class ParametricMemoryBlock(BaseMemoryBlock[str]):
    """A memory block whose long-term store is a parametric memory.

    - `aget` (each time the `Memory` is read): the last user message is recalled from the
      memory (`memory.recall`) and the recollection is the block's text. One recall per
      distinct user message (cached until the next consolidation).
    - `aput` (messages the `Memory` flushes out of its short-term queue when it exceeds its
      token limit): the user and assistant turns (or those of `remember_roles`) are queued
      as one conversation document.
      Consolidation trains the adapter (seconds on a GPU, minutes on a CPU), so by default
      the queue is consolidated only when you call `flush()` / `aflush()`; with
      `consolidate="on_put"` each flushed batch is consolidated right away (in a worker
      thread, awaited by `aput`).

    ```python
    block = ParametricMemoryBlock(memory="my-memory")
    memory = Memory.from_defaults(session_id="s1", token_limit=4000, memory_blocks=[block])
    ...
    block.flush()  # consolidate the queued conversation into the adapter
    ```
    """

    name: str = Field(default="ParametricMemory", description="The memory block's name.")
    memory: Any = Field(exclude=True, description="A ParametricMemory or a memory folder.")
    consolidate: Literal["flush", "on_put"] = Field(
        default="flush", description="When queued conversation is consolidated."
    )
    max_new_tokens: int = Field(default=192, ge=1, description="Longest recollection.")
    remember_roles: list[MessageRole] = Field(
        default=[MessageRole.USER, MessageRole.ASSISTANT],
        description="Whose turns are consolidated (user and/or assistant).",
    )
    document_prefix: str = Field(default="conversation", description="Prefix of document ids.")
    progress: bool = Field(default=False, description="Show the consolidation progress bar.")

    _pending: list[tuple[str, str, dict[str, str]]] = PrivateAttr(default_factory=list)
    _recalled: dict[str, str] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)

    # --- reading ------------------------------------------------------------------------
    def recollect(self, query: str) -> str:
        """What the memory recalls about `query` (cached per query until the next flush);
        empty while the memory holds no documents (a bare model's recollection is noise)."""
        if not self.memory.documents:
            return ""
        with self._lock:
            if query in self._recalled:
                return self._recalled[query]
        with model_lock(self.memory):
            text = self.memory.recall(query, max_new_tokens=self.max_new_tokens).text
        with self._lock:
            if len(self._recalled) >= 64:
                self._recalled.pop(next(iter(self._recalled)))
            self._recalled[query] = text
        return text

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        query = last_user_text(messages)
        if not query:
            return ""
        return await asyncio.to_thread(self.recollect, query)

    # --- writing ------------------------------------------------------------------------
    async def _aput(self, messages: list[ChatMessage]) -> None:
        self.queue_messages(messages)
        if self.consolidate == "on_put":
            await self.aflush()

    def queue_messages(self, messages: list[ChatMessage]) -> str | None:
        """Queue the user/assistant turns of `messages` as one conversation document; returns
        its id (None when they hold no text)."""
        text = transcript(messages, self.remember_roles)
        if not text:
            return None
        stamp = datetime.now(timezone.utc)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        doc_id = f"{self.document_prefix}-{stamp:%Y%m%dT%H%M%S}-{digest}"
        metadata = {
            "source": "llamaindex-memory",
            "kind": "conversation",
            "queued_at": stamp.isoformat(timespec="seconds"),
        }
        sessions = {str(m.additional_kwargs["session_id"]) for m in messages
                    if m.additional_kwargs.get("session_id") is not None}
        if sessions:
            metadata["session_id"] = ",".join(sorted(sessions))
        with self._lock:
            self._pending.append((doc_id, text, metadata))
        return doc_id

    @property
    def pending(self) -> list[str]:
        """Texts of the conversations queued and not yet consolidated."""
        with self._lock:
            return [text for _, text, _ in self._pending]

    def flush(self) -> IngestReport | None:
        """Consolidate the queued conversations into the memory (one commit each). Returns
        the memory's report, or None when nothing was queued."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return None
        try:
            with model_lock(self.memory):
                report = self.memory.add_documents(
                    [text for _, text, _ in batch],
                    ids=[doc_id for doc_id, _, _ in batch],
                    metadatas=[metadata for _, _, metadata in batch],
                    progress=self.progress,
                )
        except BaseException:
            with self._lock:  # nothing is lost: the batch goes back to the queue
                self._pending = batch + self._pending
            raise
        with self._lock:
            self._recalled.clear()
        return report

    async def aflush(self) -> IngestReport | None:
        return await asyncio.to_thread(self.flush)
