"""Helpers shared by the LlamaIndex classes: turning chat messages into the single question
the memory answers, transcripts, async iteration. The framework-free helpers (opening a
memory once, the model lock, streaming, recalled passages) come from
`parametric_memory.integration`."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TypeVar

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from parametric_memory import ParametricMemory
from parametric_memory.integration import (  # noqa: F401  (re-exported to the package)
    FOLLOW_UP_PROMPTS,
    Passage,
    model_lock,
    passage_metadata,
    recall_passages,
    resolve_memory,
)
from parametric_memory.integration import stream_answer as _stream_answer

T = TypeVar("T")


def ask(memory: ParametricMemory, question: str, max_new_tokens: int) -> str:
    with model_lock(memory):
        return memory.ask(question, max_new_tokens=max_new_tokens)


def stream_answer(memory: ParametricMemory, question: str, max_new_tokens: int) -> Iterator[str]:
    """Streamed answer without leading whitespace, as `ask` strips its answer."""
    return _stream_answer(memory, question, max_new_tokens, strip_leading=True)


async def aiterate(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Drive a blocking iterator from worker threads, one item at a time."""
    end = object()
    while (item := await asyncio.to_thread(next, iterator, end)) is not end:
        yield item  # type: ignore[misc]


_ROLE = {MessageRole.USER: "User", MessageRole.ASSISTANT: "Assistant"}


def message_text(message: ChatMessage) -> str:
    return (message.content or "").strip()


def messages_to_question(
    messages: Sequence[ChatMessage], history_turns: int = 2, include_system: bool = True
) -> str:
    """One question for the memory: the last user message, preceded (only when there is
    something to add) by the system text and up to `history_turns` earlier exchanges, each
    shortened. A lone user message is passed through unchanged."""
    convo = [m for m in messages if m.role in _ROLE and message_text(m)]
    last = max((i for i, m in enumerate(convo) if m.role == MessageRole.USER), default=None)
    if last is None:
        texts = [message_text(m) for m in messages if message_text(m)]
        if not texts:
            raise ValueError("ParametricMemoryLLM needs at least one message with text")
        question, earlier = texts[-1], []
    else:
        question = message_text(convo[last])
        earlier = convo[:last][-2 * history_turns :] if history_turns > 0 else []
    parts = []
    if include_system:
        system = [
            message_text(m)
            for m in messages
            if m.role in (MessageRole.SYSTEM, MessageRole.DEVELOPER) and message_text(m)
        ]
        if system:
            parts.append("\n".join(dict.fromkeys(system)))
    if earlier:
        lines = [f"{_ROLE[m.role]}: {_shorten(message_text(m), 300)}" for m in earlier]
        parts.append("Earlier in this conversation:\n" + "\n".join(lines))
    return "\n\n".join([*parts, question]) if parts else question


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def transcript(
    messages: Sequence[ChatMessage],
    roles: Sequence[MessageRole] = (MessageRole.USER, MessageRole.ASSISTANT),
) -> str:
    """The turns of `roles` (user, assistant) as plain text, control characters dropped (the
    memory refuses documents that contain them)."""
    lines = []
    for message in messages:
        if message.role not in _ROLE or message.role not in roles:
            continue
        if text := clean_text(message_text(message)):
            lines.append(f"{_ROLE[message.role]}: {text}")
    return "\n".join(lines)


def clean_text(text: str) -> str:
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc").strip()


def last_user_text(messages: Sequence[ChatMessage] | None) -> str:
    for message in reversed(messages or []):
        if message.role == MessageRole.USER and message_text(message):
            return message_text(message)
    return ""
