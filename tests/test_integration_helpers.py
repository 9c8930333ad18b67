"""The message helpers of `parametric_memory.integration` on plain (role, text) turns
(no model, no framework)."""

from __future__ import annotations

import asyncio

import pytest

from parametric_memory.integration import (
    aiterate,
    chat_role,
    clean_text,
    last_user_text,
    messages_to_question,
    transcript,
)

CHAT = [
    ("system", "Be brief."),
    ("user", "Tell me about Quillhaven."),
    ("assistant", "It holds a lantern festival."),
    ("tool", "ignored"),
    ("user", "When is it?"),
]


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("system", "system"),
        ("developer", "system"),
        ("user", "user"),
        ("human", "user"),
        ("assistant", "assistant"),
        ("ai", "assistant"),
        ("tool", "tool"),
        ("function", "tool"),
        ("chatbot", "tool"),
    ],
)
def test_chat_role_maps_framework_names(name: str, role: str) -> None:
    assert chat_role(name) == role


# --- messages_to_question ---------------------------------------------------------------
def test_a_lone_user_turn_is_the_question_unchanged() -> None:
    assert messages_to_question([("user", "  When is it? ")]) == "When is it?"


def test_question_keeps_system_and_brief_history() -> None:
    assert messages_to_question(CHAT, history_turns=1) == (
        "Be brief.\n\nEarlier in this conversation:\nUser: Tell me about Quillhaven.\n"
        "Assistant: It holds a lantern festival.\n\nWhen is it?"
    )
    assert messages_to_question(CHAT, history_turns=0, include_system=False) == "When is it?"
    assert messages_to_question(CHAT, history_turns=0) == "Be brief.\n\nWhen is it?"


def test_history_is_the_last_exchanges_before_the_question() -> None:
    turns = [("user", f"q{i}") if i % 2 == 0 else ("assistant", f"a{i}") for i in range(6)]
    turns += [("user", "now?"), ("assistant", "later turns are not history")]
    question = messages_to_question(turns, history_turns=1)
    assert question == "Earlier in this conversation:\nUser: q4\nAssistant: a5\n\nnow?"


def test_repeated_system_text_appears_once_and_empty_turns_are_skipped() -> None:
    turns = [("system", "A."), ("system", "B."), ("system", "A."), ("user", "  "), ("user", "Q")]
    assert messages_to_question(turns) == "A.\nB.\n\nQ"


def test_long_history_is_shortened() -> None:
    turns = [("user", "x" * 400), ("assistant", "short"), ("user", "Q")]
    line = messages_to_question(turns).splitlines()[1]
    assert line == "User: " + "x" * 299 + "…"


def test_without_a_user_turn_the_last_text_is_the_question() -> None:
    assert messages_to_question([("system", "Sys."), ("tool", "result ")]) == "Sys.\n\nresult"
    assert messages_to_question([("assistant", "only me")]) == "only me"


def test_no_text_at_all_is_refused_naming_the_caller() -> None:
    with pytest.raises(ValueError, match="ChatX needs at least one message with text"):
        messages_to_question([("user", " "), ("system", "")], caller="ChatX")


# --- transcript, clean_text, last_user_text ---------------------------------------------
def test_transcript_keeps_user_and_assistant_turns_with_text() -> None:
    turns = [*CHAT, ("assistant", " \x07 "), ("assistant", "Soon.")]
    assert transcript(turns) == (
        "User: Tell me about Quillhaven.\nAssistant: It holds a lantern festival.\n"
        "User: When is it?\nAssistant: Soon."
    )
    assert transcript(turns, roles={"user"}) == (
        "User: Tell me about Quillhaven.\nUser: When is it?"
    )
    assert transcript(turns, roles={"system", "tool"}) == ""


def test_clean_text_drops_control_characters_and_line_end_spaces() -> None:
    assert clean_text(" a\x00b\x1b[0m \t\nc\td\r\n ") == "ab[0m\nc\td"
    assert clean_text("\x07") == ""


def test_last_user_text() -> None:
    assert last_user_text(CHAT) == "When is it?"
    assert last_user_text([*CHAT, ("user", "  "), ("assistant", "x")]) == "When is it?"
    assert last_user_text([("assistant", "x")]) == ""
    assert last_user_text([]) == ""


def test_aiterate_yields_every_item_in_order() -> None:
    async def collect() -> list[int]:
        return [item async for item in aiterate(iter(range(5)))]

    assert asyncio.run(collect()) == [0, 1, 2, 3, 4]


def test_resolve_memory_makes_a_memory_once_and_refuses_another_config(tmp_path, tiny_config):
    from parametric_memory import InvalidArgumentError, MemoryNotFoundError
    from parametric_memory.integration import resolve_memory

    folder = tmp_path / "made"
    with pytest.raises(MemoryNotFoundError):
        resolve_memory(folder)  # opening alone makes nothing
    made = resolve_memory(folder, tiny_config)
    assert (folder / "manifest.json").exists()
    assert resolve_memory(str(folder)) is made  # shared: one model per folder and process
    assert resolve_memory(folder, tiny_config, create=True) is made
    other = tiny_config.model_copy(update={"seed": 7})
    with pytest.raises(InvalidArgumentError, match="another MemoryConfig"):
        resolve_memory(folder, other)
