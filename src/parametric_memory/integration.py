"""Helpers for framework integrations (LangChain, LlamaIndex), over the public
`ParametricMemory` API only: opening a memory once per process, serialising model use on
one memory, streaming without holding the lock across yields, and recalling several
passages for one query."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from .memory import IngestReport, ParametricMemory
from .method.prompts import FOLLOW_UP_PROMPTS

_OPENED: dict[Path, ParametricMemory] = {}
_OPEN_LOCK = threading.Lock()
_MODEL_LOCKS: WeakKeyDictionary[ParametricMemory, threading.RLock] = WeakKeyDictionary()



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
    from worker threads (a framework's async defaults, `batch`) run one at a time."""
    with _OPEN_LOCK:
        lock = _MODEL_LOCKS.get(memory)
        if lock is None:
            lock = _MODEL_LOCKS[memory] = threading.RLock()
        return lock


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
        with model_lock(self.memory):
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
    come back when the phrasings run out of distinct answers."""
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
