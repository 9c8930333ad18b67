"""Helpers for framework integrations (LangChain, LlamaIndex), over the public
`ParametricMemory` API only: opening a memory once per process, serialising model use on
one memory, streaming without holding the lock across yields, recalling several passages
for one query, and turning chat messages into the memory's question or into a transcript.

The message helpers work on plain data, "turns": (role, text) pairs whose role is "system",
"user", "assistant" or "tool" (`chat_role` maps a framework's role names); each integration
converts its own message types to turns in a one-line adapter."""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import re
import threading
import unicodedata
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar
from weakref import WeakKeyDictionary

from .config import MemoryConfig
from .engine.models import DEFAULT_MODEL_NAME
from .errors import InvalidArgumentError
from .memory import IngestReport, ParametricMemory
from .method.prompts import FOLLOW_UP_PROMPTS
from .store import MANIFEST_FILE

_OPENED: dict[Path, ParametricMemory] = {}
_OPEN_LOCK = threading.Lock()
_MODEL_LOCKS: WeakKeyDictionary[ParametricMemory, threading.RLock] = WeakKeyDictionary()

T = TypeVar("T")
Role = Literal["system", "user", "assistant", "tool"]
Turn = tuple[str, str]
"""(role, text) of one chat message; role is one of `Role`."""


def resolve_memory(
    value: Any, config: MemoryConfig | None = None, *, create: bool = False
) -> ParametricMemory:
    """A `ParametricMemory` as is, or a path to open. A path is opened once per process
    (and per resolved folder), so several components share one model in RAM. A folder that
    holds no memory yet becomes a new one (`ParametricMemory.create`) when `config` is given
    or `create` is set (then with `MemoryConfig()`). `config` is for a new memory: an
    existing memory made with another config (its device aside) is refused rather than
    silently kept."""
    if isinstance(value, ParametricMemory):
        memory = value
    elif isinstance(value, (str, os.PathLike)):
        memory = _opened(Path(value).expanduser().resolve(), config, create)
    else:
        raise TypeError(
            f"memory must be a ParametricMemory or the path of a memory folder, got "
            f"{type(value).__name__}"
        )
    if config is not None:
        _check_config(memory, config)
    return memory


def _opened(root: Path, config: MemoryConfig | None, create: bool) -> ParametricMemory:
    with _OPEN_LOCK:
        if root not in _OPENED:
            if (create or config is not None) and not (root / MANIFEST_FILE).exists():
                _OPENED[root] = ParametricMemory.create(root, config or MemoryConfig())
            else:
                _OPENED[root] = ParametricMemory.open(root)
        return _OPENED[root]


def _check_config(memory: ParametricMemory, config: MemoryConfig) -> None:
    ignored = {"device"}
    if config.model_dump(exclude=ignored) != memory.config.model_dump(exclude=ignored):
        raise InvalidArgumentError(
            f"{memory.root} holds a memory made with another MemoryConfig: the config applies "
            "to a new memory; leave it out to use this one, or give a new folder"
        )


def model_name(memory: ParametricMemory) -> str:
    """The base model's name, for a framework's `model_name`: the hub id or folder the
    memory was created with, and for "default" the default model's own name."""
    name = memory.model.name
    return DEFAULT_MODEL_NAME if name in ("", "default") else name


def model_lock(memory: ParametricMemory) -> threading.RLock:
    """One lock per memory: generation and writes share one model and adapter, so calls
    from worker threads (a framework's async defaults, `batch`) run one at a time."""
    with _OPEN_LOCK:
        lock = _MODEL_LOCKS.get(memory)
        if lock is None:
            lock = _MODEL_LOCKS[memory] = threading.RLock()
        return lock


def ask(memory: ParametricMemory, question: str, max_new_tokens: int) -> str:
    """`memory.ask(question)`. Not under `model_lock`: the memory takes its own turns, and
    questions of threads asking at once are answered in one batch."""
    return memory.ask(question, max_new_tokens=max_new_tokens)


async def aiterate(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Drive a blocking iterator from worker threads, one item at a time."""
    end = object()
    while (item := await asyncio.to_thread(next, iterator, end)) is not end:
        yield item  # type: ignore[misc]


class ConversationQueue:
    """What an agent-memory integration keeps between calls: conversations queued for
    consolidation (nothing is lost if consolidating fails: they go back to the queue) and
    recollections cached per query until the next consolidation changes the weights."""

    RECALL_CACHE_SIZE = 64

    def __init__(self, memory: ParametricMemory) -> None:
        self.memory = memory
        self._pending: list[tuple[str, str, dict[str, str]]] = []
        self._recalled: dict[str, str] = {}
        self._lock = threading.Lock()

    def recollect(self, query: str, max_new_tokens: int) -> str:
        """What the memory recalls about `query`; empty while the memory holds no
        documents (a bare model's recollection is noise)."""
        if not self.memory.documents:
            return ""
        with self._lock:
            if query in self._recalled:
                return self._recalled[query]
        text = self.memory.recall(query, max_new_tokens=max_new_tokens).text
        with self._lock:
            if len(self._recalled) >= self.RECALL_CACHE_SIZE:
                self._recalled.pop(next(iter(self._recalled)))  # the oldest
            self._recalled[query] = text
        return text

    def queue(self, text: str, prefix: str, metadata: dict[str, str]) -> str:
        """Queue `text` as one conversation document; returns its id."""
        stamp = datetime.now(timezone.utc)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        doc_id = f"{prefix}-{stamp:%Y%m%dT%H%M%S}-{digest}"
        stamped = {**metadata, "kind": "conversation"}
        stamped["queued_at"] = stamp.isoformat(timespec="seconds")
        with self._lock:
            self._pending.append((doc_id, text, stamped))
        return doc_id

    @property
    def pending(self) -> list[str]:
        """Texts of the conversations queued and not yet consolidated."""
        with self._lock:
            return [text for _, text, _ in self._pending]

    def flush(self, progress: bool) -> IngestReport | None:
        """Consolidate the queued conversations (one commit each). Returns the memory's
        report, or None when nothing was queued."""
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
                    progress=progress,
                )
        except BaseException:
            with self._lock:
                self._pending = batch + self._pending
            raise
        with self._lock:
            self._recalled.clear()
        return report


def stream_answer(
    memory: ParametricMemory, question: str, max_new_tokens: int, *, strip_leading: bool = False
) -> Iterator[str]:
    """`memory.stream(question)` run by a helper thread that holds the model lock while the
    model generates, so the lock is never held across this iterator's yields (a consumer may
    use the memory between pieces, and async callers may resume on other threads).
    `strip_leading` drops leading whitespace, as `ask` strips its answer."""
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
    started = not strip_leading
    while (item := pieces.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        piece = str(item) if started else str(item).lstrip()
        if piece:
            started = True
            yield piece


@dataclass(frozen=True)
class Passage:
    text: str
    kind: str
    """"recall" (memory.recall of the query) or "answer" (memory.ask of a phrasing)."""
    prompt: str
    """The query (for "recall") or the question asked (for "answer")."""
    document_ids: list[str]
    """Held documents the recollection of the query overlaps most (best first)."""


def recall_passages(
    memory: ParametricMemory, query: str, k: int, max_new_tokens: int
) -> list[Passage]:
    """Up to `k` distinct, non-empty texts the memory produces about `query`: its
    recollection first, then answers to the phrasings in `FOLLOW_UP_PROMPTS`. Fewer than `k`
    come back when the phrasings run out of distinct answers. A memory that holds no
    documents has nothing to recall: no passages (a bare model's text is noise)."""
    if k < 1 or not memory.documents:
        return []
    topic = query.strip().rstrip("?.! ") or query
    passages: list[Passage] = []
    seen: set[str] = set()

    def keep(text: str, kind: str, prompt: str, ids: list[str]) -> None:
        key = " ".join(text.split()).casefold()
        if key and key not in seen and len(passages) < k:
            seen.add(key)
            passages.append(Passage(text, kind, prompt, ids))

    # Not under model_lock: retrievers' `batch` and async calls recall in threads, and the
    # memory answers recalls waiting at once in one batch.
    first = memory.recall(query, max_new_tokens=max_new_tokens)
    keep(first.text, "recall", query, list(first.document_ids))
    prompts = [p.format(query=query, topic=topic) for p in FOLLOW_UP_PROMPTS]
    while len(passages) < k and prompts:
        batch, prompts = prompts[: k - len(passages)], prompts[k - len(passages) :]
        answers = memory.ask_batch(batch, max_new_tokens=max_new_tokens)
        for prompt, answer in zip(batch, answers, strict=True):
            keep(answer, "answer", prompt, list(first.document_ids))
    return passages


PROVENANCE_KEYS = ("memory", "document_ids", "recalled", "recall_kind", "recall_prompt")
"""The metadata keys of a recalled passage that say where its text came from (the rest is the
metadata of the held document it matches best)."""


def held_metadata(memory: ParametricMemory, document_ids: Sequence[str]) -> dict[str, str]:
    """The metadata the first of `document_ids` the memory holds was added with ({} if none)."""
    held = memory.documents
    for doc_id in document_ids:
        if doc_id in held:
            return dict(held[doc_id].metadata)
    return {}


def passage_metadata(
    memory: ParametricMemory, passage: Passage, held: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Metadata of a recalled passage: the metadata of the held document it matches best
    (`held`, by default `held_metadata` of its document ids), so `source` and the rest are
    what the user added the document with, then its provenance under `PROVENANCE_KEYS`
    (the memory's folder, the matching document ids, "recall" or "answer", the prompt)."""
    if held is None:
        held = held_metadata(memory, passage.document_ids)
    return {
        **held,
        "memory": str(memory.root),
        "document_ids": list(passage.document_ids),
        "recalled": True,
        "recall_kind": passage.kind,
        "recall_prompt": passage.prompt,
    }


# --- chat messages, as (role, text) turns ----------------------------------------------
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}
_SPEAKERS = {"user": "User", "assistant": "Assistant"}


def chat_role(name: str) -> Role:
    """The role of a framework's role name: system/developer, user/human, assistant/ai;
    any other name (tool results, function calls, ...) is "tool"."""
    return _ROLES.get(name, "tool")


def messages_to_question(
    turns: Sequence[Turn],
    *,
    history_turns: int = 2,
    include_system: bool = True,
    caller: str = "the memory",
) -> str:
    """One question for the memory: the last user turn, preceded (only when there is
    something to add) by the system text and up to `history_turns` earlier exchanges, each
    shortened. A lone user turn is passed through unchanged, which is the layout the memory
    was trained on. Without a user turn, the last turn with text is the question."""
    texts = [(role, text.strip()) for role, text in turns if text.strip()]
    if not texts:
        raise ValueError(f"{caller} needs at least one message with text")
    convo = [(role, text) for role, text in texts if role in _SPEAKERS]
    last = max((i for i, (role, _) in enumerate(convo) if role == "user"), default=None)
    if last is None:
        question, earlier = texts[-1][1], []
    else:
        question = convo[last][1]
        earlier = convo[:last][-2 * history_turns :] if history_turns > 0 else []
    system = [text for role, text in texts if role == "system"] if include_system else []
    parts = ["\n".join(dict.fromkeys(system))] if system else []
    if earlier:
        lines = [f"{_SPEAKERS[role]}: {_shorten(text, 300)}" for role, text in earlier]
        parts.append("Earlier in this conversation:\n" + "\n".join(lines))
    return "\n\n".join([*parts, question])


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def transcript(turns: Sequence[Turn], roles: Collection[str] = ("user", "assistant")) -> str:
    """The user and assistant turns (those of `roles`) as plain text ("User: ..." /
    "Assistant: ..."), cleaned by `clean_text`; turns left without text are dropped."""
    kept = [(role, clean_text(text)) for role, text in turns if role in _SPEAKERS and role in roles]
    return "\n".join(f"{_SPEAKERS[role]}: {text}" for role, text in kept if text)


def clean_text(text: str) -> str:
    """`text` without control characters other than newlines and tabs (the memory refuses
    documents that contain them), without spaces before line ends, stripped."""
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def last_user_text(turns: Sequence[Turn]) -> str:
    """The text of the last user turn with text, stripped ("" when there is none)."""
    for role, text in reversed(turns):
        if role == "user" and text.strip():
            return text.strip()
    return ""
