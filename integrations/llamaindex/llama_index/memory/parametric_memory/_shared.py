"""Helpers shared by the LlamaIndex classes, over the public `ParametricMemory` API only:
opening a memory once per process, serialising model use on one memory, recalling several
passages for one query, streaming without holding a lock across yields, and turning chat
messages into the single question the memory answers."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import unicodedata
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from llama_index.core.base.llms.types import ChatMessage, MessageRole

from parametric_memory import ParametricMemory

T = TypeVar("T")

_OPENED: dict[Path, ParametricMemory] = {}
_OPEN_LOCK = threading.Lock()
_MODEL_LOCKS: WeakKeyDictionary[ParametricMemory, threading.RLock] = WeakKeyDictionary()

FOLLOW_UP_PROMPTS = (
    "{query}",
    "What do you remember about {topic}?",
    "List the facts you know about {topic}.",
    "Summarize what you know about {topic}.",
    "Which names, numbers and dates do you know about {topic}?",
    "Explain {topic} in a few sentences.",
)
"""Extra phrasings asked (in order) when more than one passage is wanted for a query. The
first passage is always `memory.recall(query)`."""


def resolve_memory(value: Any) -> ParametricMemory:
    """A `ParametricMemory` as is, or a path to open. A path is opened once per process
    (and per resolved folder), so several components share one model in RAM."""
    if isinstance(value, ParametricMemory):
        return value
    if isinstance(value, (str, os.PathLike)):
        root = Path(value).expanduser().resolve()
        with _OPEN_LOCK:
            if root not in _OPENED:
                _OPENED[root] = ParametricMemory.open(root)
            return _OPENED[root]
    raise TypeError(
        f"memory must be a ParametricMemory or the path of a memory folder, got "
        f"{type(value).__name__}"
    )


def model_lock(memory: ParametricMemory) -> threading.RLock:
    """One lock per memory: generation and writes share one model and adapter, so calls
    from worker threads run one at a time."""
    with _OPEN_LOCK:
        lock = _MODEL_LOCKS.get(memory)
        if lock is None:
            lock = _MODEL_LOCKS[memory] = threading.RLock()
        return lock


def ask(memory: ParametricMemory, question: str, max_new_tokens: int) -> str:
    with model_lock(memory):
        return memory.ask(question, max_new_tokens=max_new_tokens)


def stream_answer(memory: ParametricMemory, question: str, max_new_tokens: int) -> Iterator[str]:
    """`memory.stream(question)` run by a helper thread that holds the model lock while the
    model generates, so no lock is held across this iterator's yields. Leading whitespace is
    dropped, as `ask` strips its answer."""
    pieces: queue.Queue[object] = queue.Queue()
    end = object()

    def produce() -> None:
        try:
            with model_lock(memory):
                for piece in memory.stream(question, max_new_tokens=max_new_tokens):
                    pieces.put(piece)
        except BaseException as error:  # handed to the consumer
            pieces.put(error)
        finally:
            pieces.put(end)

    threading.Thread(target=produce, name="parametric-memory-stream", daemon=True).start()
    started = False
    while (item := pieces.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        piece = str(item) if started else str(item).lstrip()
        if piece:
            started = True
            yield piece


async def aiterate(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Drive a blocking iterator from worker threads, one item at a time."""
    end = object()
    while (item := await asyncio.to_thread(next, iterator, end)) is not end:
        yield item  # type: ignore[misc]


@dataclass(frozen=True)
class Passage:
    text: str
    kind: str
    """"recall" (memory.recall of the query) or "answer" (memory.ask of a phrasing)."""
    prompt: str
    document_ids: list[str]
    """Held documents the recollection of the query overlaps most (best first)."""


def recall_passages(
    memory: ParametricMemory, query: str, k: int, max_new_tokens: int
) -> list[Passage]:
    """Up to `k` distinct, non-empty texts the memory produces about `query`: its
    recollection first, then answers to the phrasings in `FOLLOW_UP_PROMPTS`."""
    if k < 1:
        return []
    topic = query.strip().rstrip("?.! ") or query
    passages: list[Passage] = []
    seen: set[str] = set()

    def keep(text: str, kind: str, prompt: str, ids: list[str]) -> None:
        key = " ".join(text.split()).casefold()
        if key and key not in seen and len(passages) < k:
            seen.add(key)
            passages.append(Passage(text, kind, prompt, ids))

    with model_lock(memory):
        first = memory.recall(query, max_new_tokens=max_new_tokens)
        keep(first.text, "recall", query, list(first.document_ids))
        prompts = [p.format(query=query, topic=topic) for p in FOLLOW_UP_PROMPTS]
        while len(passages) < k and prompts:
            batch, prompts = prompts[: k - len(passages)], prompts[k - len(passages) :]
            answers = memory.ask_batch(batch, max_new_tokens=max_new_tokens)
            for prompt, answer in zip(batch, answers, strict=True):
                keep(answer, "answer", prompt, list(first.document_ids))
    return passages


def passage_metadata(memory: ParametricMemory, passage: Passage) -> dict[str, Any]:
    return {
        "source": "parametric-memory",
        "memory": str(memory.root),
        "document_ids": list(passage.document_ids),
        "recalled": True,
        "kind": passage.kind,
        "prompt": passage.prompt,
    }


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
