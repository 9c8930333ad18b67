"""`ParametricMemoryIndex`: the index API of `VectorStoreIndex` over a memory, on the tiny
model (seconds each)."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

import pytest
from li_tiny import FACTS, scratch_dir, tiny_config
from llama_index.core import Document
from llama_index.core.base.response.schema import Response
from llama_index.core.chat_engine import (
    CondensePlusContextChatEngine,
    CondenseQuestionChatEngine,
    ContextChatEngine,
    SimpleChatEngine,
)
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.indices.base import BaseIndex
from llama_index.core.llms.mock import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.indices.managed.parametric_memory import ParametricMemoryIndex
from llama_index.llms.parametric_memory.base import messages_to_question
from llama_index.query_engine.parametric_memory import ParametricMemoryQueryEngine

from parametric_memory import ParametricMemory, Recollection
from parametric_memory import store as memory_store
from parametric_memory.documents import content_hash

TOWN = "Brindlewick has 27 bridges. The oldest one, Copper Span, opened in 1790."
MOVED = (
    "The Quillhaven lantern festival is held every June 2. "
    "Its founder, Mira Tallow, lit the first lantern in 1911."
)
QUESTION = "When is the Quillhaven lantern festival?"


def festival(text: str = FACTS) -> Document:
    return Document(text=text, id_="festival", metadata={"file_name": "festival.txt"})


def town() -> Document:
    return Document(text=TOWN, id_="town", metadata={"file_name": "town.txt"})


def build(folder: Path, documents: list[Document], **kwargs: object) -> ParametricMemoryIndex:
    """The one line that replaces `VectorStoreIndex.from_documents(documents)`."""
    return ParametricMemoryIndex.from_documents(
        documents, memory_path=folder, config=tiny_config(), **kwargs
    )


@functools.cache
def held_index() -> ParametricMemoryIndex:
    """One index holding both documents, shared by the read-only tests."""
    return build(scratch_dir("pm-index-"), [festival(), town()])


def committed_state(memory: ParametricMemory) -> str | None:
    return memory_store.read_manifest(memory.root).state


def fix_recall(monkeypatch: pytest.MonkeyPatch, memory: ParametricMemory, doc_id: str) -> None:
    """Which held document a recollection matches depends on what the model writes; the
    tiny random-weight model writes noise, so the match is fixed."""
    real_recall = memory.recall

    def recall(query: str, *, max_new_tokens: int = 192) -> Recollection:
        return Recollection(query, real_recall(query, max_new_tokens=max_new_tokens).text, [doc_id])

    monkeypatch.setattr(memory, "recall", recall)


def test_one_line_swap_for_vector_store_index(monkeypatch):
    index = held_index()
    assert isinstance(index, BaseIndex)
    assert set(index.ref_doc_info) == {"festival", "town"}
    assert index.ref_doc_info["town"].metadata["file_name"] == "town.txt"

    engine = index.as_query_engine()
    assert isinstance(engine, ParametricMemoryQueryEngine)
    response = engine.query(QUESTION)  # the answer from the weights: no source nodes
    assert isinstance(response, Response) and response.source_nodes == []
    assert response.metadata["memory"] == str(index.memory.root)

    fix_recall(monkeypatch, index.memory, "festival")
    [hit] = index.as_retriever(max_new_tokens=6).retrieve(QUESTION)
    assert hit.node.metadata["file_name"] == "festival.txt"
    assert hit.node.ref_doc_id == "festival"


def test_query_engine_with_another_llm_reads_recalled_passages(monkeypatch, caplog):
    index = held_index()
    fix_recall(monkeypatch, index.memory, "town")
    engine = index.as_query_engine(llm=MockLLM(max_tokens=4), similarity_top_k=2)
    assert isinstance(engine, RetrieverQueryEngine)
    response = engine.query("How many bridges does Brindlewick have?")
    assert len(response.source_nodes) == 2
    assert response.source_nodes[0].node.metadata["file_name"] == "town.txt"

    with caplog.at_level(logging.WARNING):
        index.as_query_engine(similarity_top_k=3, max_new_tokens=5)
    assert "ignores similarity_top_k" in caplog.text


def test_chat_engine_answers_from_the_memorys_llm_with_history():
    index = held_index()
    engine = index.as_chat_engine(max_new_tokens=12)
    assert isinstance(engine, SimpleChatEngine)
    memory = index.memory
    assert engine.chat(QUESTION).response == memory.ask(QUESTION, max_new_tokens=12)
    second = engine.chat("Who founded it?").response
    asked = messages_to_question(engine.chat_history[:-1])  # the earlier exchange folded in
    assert "Earlier in this conversation" in asked
    assert second == memory.ask(asked, max_new_tokens=12)


def test_chat_engine_with_another_llm_condenses_and_reads_recalled_text_and_other_modes():
    index = held_index()
    engine = index.as_chat_engine(llm=MockLLM(max_tokens=4), similarity_top_k=1, max_new_tokens=6)
    assert isinstance(engine, CondensePlusContextChatEngine)
    reply = engine.chat(QUESTION)
    assert len(reply.source_nodes) == 1 and reply.source_nodes[0].node.metadata["recalled"]

    asking = index.as_chat_engine(chat_mode="condense_question", max_new_tokens=6)
    assert isinstance(asking, CondenseQuestionChatEngine)
    assert isinstance(asking._query_engine, ParametricMemoryQueryEngine)
    assert asking._query_engine.max_new_tokens == 6
    assert isinstance(index.as_chat_engine(chat_mode="context"), ContextChatEngine)
    with pytest.raises(ValueError, match="removed"):
        index.as_chat_engine(chat_mode=ChatMode.REACT)


def test_insert_delete_and_refresh_round_trip(caplog):
    index = build(scratch_dir("pm-index-"), [festival()])
    memory = index.memory
    index.insert(town())
    assert set(index.ref_doc_info) == {"festival", "town"}
    state = committed_state(memory)
    index.insert(town())  # held in this version: nothing trained
    assert index.refresh_ref_docs([festival(), town()]) == [False, False]
    assert committed_state(memory) == state

    assert index.refresh_ref_docs([festival(MOVED), town()]) == [True, False]
    held = memory.documents
    assert held["festival"].content_hash == content_hash(MOVED)
    assert held["festival"].metadata["ref_doc_hash"] == festival(MOVED).hash

    index.delete_ref_doc("festival")
    assert set(index.ref_doc_info) == {"town"}
    index.delete_ref_doc("festival")  # not held: logged, as BaseIndex does
    assert "festival not found" in caplog.text
    asyncio.run(index.adelete_ref_doc("town"))
    assert index.ref_doc_info == {}
    assert asyncio.run(index.arefresh_ref_docs([town()])) == [True]
    with pytest.raises(NotImplementedError, match="delete_ref_doc"):
        index.delete_nodes(["town"])


def test_reopening_the_folder_retrains_only_changed_documents(caplog):
    folder = scratch_dir("pm-index-")
    split = [SentenceSplitter(chunk_size=20, chunk_overlap=4)]  # joined again before training
    first = build(folder, [festival(), town()], transformations=split)
    assert set(first.ref_doc_info) == {"festival", "town"}
    assert first.memory.documents["festival"].content_hash == content_hash(FACTS)
    state = committed_state(first.memory)

    with caplog.at_level(logging.WARNING):
        again = build(folder, [festival(), town()], transformations=split)
    assert again.memory is first.memory  # a folder is opened (or made) once per process
    assert committed_state(again.memory) == state  # nothing trained again
    assert "another config" not in caplog.text

    before = again.memory.documents
    reopened = ParametricMemoryIndex(memory=str(folder))
    assert reopened.memory is again.memory  # a path is opened once per process
    reopened.refresh_ref_docs([festival(MOVED), town()])
    after = reopened.memory.documents
    assert after["town"] == before["town"]  # neither forgotten nor retrained
    assert after["festival"].content_hash == content_hash(MOVED)


def test_from_documents_needs_a_memory_path():
    with pytest.raises(TypeError, match="memory_path="):
        ParametricMemoryIndex.from_documents([festival()])
