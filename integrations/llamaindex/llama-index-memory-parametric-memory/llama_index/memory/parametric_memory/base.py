"""`ParametricMemoryBlock`: long-term memory for `llama_index.core.memory.Memory` that
recalls from a parametric memory's weights and consolidates flushed conversation into it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.memory.memory import BaseMemoryBlock

from parametric_memory import IngestReport, ParametricMemory
from parametric_memory.integration import (
    ConversationQueue,
    Turn,
    chat_role,
    last_user_text,
    resolve_memory,
    transcript,
)


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

    _queue: ConversationQueue = PrivateAttr()

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._queue = ConversationQueue(self.memory)

    # --- reading ------------------------------------------------------------------------
    def recollect(self, query: str) -> str:
        """What the memory recalls about `query` (cached per query until the next flush);
        empty while the memory holds no documents (a bare model's recollection is noise)."""
        return self._queue.recollect(query, self.max_new_tokens)

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        query = last_user_text(_turns(messages or []))
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
        text = transcript(_turns(messages), {chat_role(role.value) for role in self.remember_roles})
        if not text:
            return None
        metadata = {"source": "llamaindex-memory"}
        sessions = {
            str(m.additional_kwargs["session_id"])
            for m in messages
            if m.additional_kwargs.get("session_id") is not None
        }
        if sessions:
            metadata["session_id"] = ",".join(sorted(sessions))
        return self._queue.queue(text, self.document_prefix, metadata)

    @property
    def pending(self) -> list[str]:
        """Texts of the conversations queued and not yet consolidated."""
        return self._queue.pending

    def flush(self) -> IngestReport | None:
        """Consolidate the queued conversations into the memory (one commit each). Returns
        the memory's report, or None when nothing was queued."""
        return self._queue.flush(self.progress)

    async def aflush(self) -> IngestReport | None:
        return await asyncio.to_thread(self.flush)


def _turns(messages: Sequence[ChatMessage]) -> list[Turn]:
    """(role, text) of each message, as the helpers of `parametric_memory.integration` take."""
    return [(chat_role(m.role.value), m.content or "") for m in messages]
