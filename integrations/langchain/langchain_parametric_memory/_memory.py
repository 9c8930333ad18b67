"""Helpers of the LangChain classes: LangChain messages as the (role, text) turns of the
message helpers of `parametric_memory.integration` (the question the memory answers,
transcripts), and token counts. The framework-free helpers (opening a memory once, the model
lock, streaming, recalled passages) come from `parametric_memory.integration` too."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from parametric_memory import MemoryConfig, ParametricMemory, integration
from parametric_memory.integration import (  # noqa: F401  (re-exported to the package)
    FOLLOW_UP_PROMPTS,
    Passage,
    Turn,
    chat_role,
    clean_text,
    model_lock,
    model_name,
    passage_metadata,
    recall_passages,
    resolve_memory,
    stream_answer,
)

logger = logging.getLogger(__name__)

METADATA_KEY = "langchain_metadata"
"""Key, in the memory's per-document metadata (str -> str), of the LangChain metadata as
JSON, so values keep their types (the memory itself stores strings)."""
TEXT_KEY = "langchain_page_content"
"""Key of the exact page content, kept only when `ParametricMemoryIndex(store_text=True)`."""


def open_memory(value: Any, config: Any = None, *, create: bool = False) -> ParametricMemory:
    """`resolve_memory`, taking `config` as a `MemoryConfig` or its fields (a dict): a
    folder without a memory becomes a new one when `config` is given or `create` is set;
    an existing memory made with another config is refused."""
    memory_config = None if config is None else MemoryConfig.model_validate(config)
    return resolve_memory(value, memory_config, create=create)


def open_memory_input(data: Any) -> Any:
    """A pydantic model's input with `memory` opened (`open_memory`), or made into a new
    memory with the input's `memory_config`."""
    if isinstance(data, dict) and "memory" in data:
        return {**data, "memory": open_memory(data["memory"], data.get("memory_config"))}
    return data


def decode_metadata(stored: Mapping[str, str]) -> dict[str, Any]:
    """A held document's LangChain metadata: as `ParametricMemoryIndex` stored it (JSON, with
    its types), or the memory's own string metadata for documents added otherwise."""
    if METADATA_KEY in stored:
        try:
            return json.loads(stored[METADATA_KEY])
        except json.JSONDecodeError:
            logger.warning("unreadable %s in a memory document's metadata", METADATA_KEY)
    return {k: v for k, v in stored.items() if k not in (METADATA_KEY, TEXT_KEY)}


def turns(messages: Sequence[BaseMessage]) -> list[Turn]:
    """(role, text) of each message: "human", "ai" and "system" messages as the user,
    assistant and system turns; any other (tool results, ...) as a "tool" turn."""
    return [(chat_role(message.type), message.text) for message in messages]


def messages_to_question(
    messages: Sequence[BaseMessage], *, history_turns: int = 2, include_system: bool = True
) -> str:
    """One question for the memory (`parametric_memory.integration.messages_to_question`):
    the last human message, preceded (only when there is something to add) by the system
    text and up to `history_turns` earlier exchanges. A lone human message is passed
    through unchanged, which is the layout the memory was trained on."""
    return integration.messages_to_question(
        turns(messages),
        history_turns=history_turns,
        include_system=include_system,
        caller="ChatParametricMemory",
    )


def transcript(messages: Sequence[BaseMessage], roles: Sequence[str] = ("human", "ai")) -> str:
    """The turns of `roles` ("human", "ai") as plain text ("User: ..." / "Assistant: ..."),
    control characters dropped (the memory refuses documents that contain them)."""
    return integration.transcript(turns(messages), {chat_role(role) for role in roles})


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """The text of the last human message with text, stripped ("" when there is none)."""
    return integration.last_user_text(turns(messages))


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
