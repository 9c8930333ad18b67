"""Helpers of the LangChain classes: turning messages into the single question the memory
answers, transcripts, token counts. The framework-free helpers (opening a memory once,
the model lock, streaming, recalled passages) come from `parametric_memory.integration`."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from parametric_memory import ParametricMemory
from parametric_memory.integration import (  # noqa: F401  (re-exported to the package)
    FOLLOW_UP_PROMPTS,
    Passage,
    model_lock,
    passage_metadata,
    recall_passages,
    resolve_memory,
    stream_answer,
)


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
