"""Helpers shared by the LangChain classes, over the public `ParametricMemory` API only:
opening a memory once per process, serialising model use on one memory, recalling several
passages for one query, and turning messages into the single question the memory answers."""

from __future__ import annotations

import os
import queue
import re
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from langchain_core.messages import BaseMessage

from parametric_memory import ParametricMemory

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
    from threads (LangChain's async defaults, `batch`) run one at a time."""
    with _OPEN_LOCK:
        lock = _MODEL_LOCKS.get(memory)
        if lock is None:
            lock = _MODEL_LOCKS[memory] = threading.RLock()
        return lock


def stream_answer(memory: ParametricMemory, question: str, max_new_tokens: int) -> Iterator[str]:
    """`memory.stream(question)` run by a helper thread that holds the model lock while the
    model generates, so the lock is never held across this iterator's yields (a consumer may
    use the memory between pieces, and async callers may resume on other threads)."""
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
    while (item := pieces.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield str(item)


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


def messages_to_question(
    messages: Sequence[BaseMessage], *, history_turns: int = 2, include_system: bool = True
) -> str:
    """One question for the memory: the last human message, preceded (only when there is
    something to add) by the system text and up to `history_turns` earlier exchanges, each
    shortened. A lone human message is passed through unchanged, which is the layout the
    memory was trained on."""
    convo = [m for m in messages if m.type in ("human", "ai") and m.text.strip()]
    last = max((i for i, m in enumerate(convo) if m.type == "human"), default=None)
    if last is None:
        texts = [m.text.strip() for m in messages if m.text.strip()]
        if not texts:
            raise ValueError("ChatParametricMemory needs at least one message with text")
        question, earlier = texts[-1], []
    else:
        question = convo[last].text.strip()
        earlier = convo[:last][-2 * history_turns :] if history_turns > 0 else []
    parts = []
    if include_system:
        system = [m.text.strip() for m in messages if m.type == "system" and m.text.strip()]
        if system:
            parts.append("\n".join(dict.fromkeys(system)))
    if earlier:
        lines = [f"{_ROLE[m.type]}: {_shorten(m.text.strip(), 300)}" for m in earlier]
        parts.append("Earlier in this conversation:\n" + "\n".join(lines))
    return "\n\n".join([*parts, question]) if parts else question


_ROLE = {"human": "User", "ai": "Assistant"}


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def transcript(messages: Sequence[BaseMessage], roles: Sequence[str] = ("human", "ai")) -> str:
    """The turns of `roles` ("human", "ai") as plain text ("User: ..." / "Assistant: ..."),
    control characters dropped (the memory refuses documents that contain them)."""
    lines = []
    for message in messages:
        if message.type not in _ROLE or message.type not in roles:
            continue
        text = clean_text(message.text)
        if text:
            lines.append(f"{_ROLE[message.type]}: {text}")
    return "\n".join(lines)


def clean_text(text: str) -> str:
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def count_prompt_tokens(memory: ParametricMemory, question: str) -> int:
    """Tokens of the prompt the memory generates from: the question in the model's chat
    template (what `ask` and `stream` feed the model)."""
    tokenizer = memory.model.tokenizer
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)
    return len(tokenizer(question)["input_ids"])


def count_tokens(memory: ParametricMemory, text: str) -> int:
    if not text:
        return 0
    return len(memory.model.tokenizer(text, add_special_tokens=False)["input_ids"])
