"""The LlamaIndex classes on the tiny model (seconds)."""

from __future__ import annotations

import asyncio

import pytest
from li_tiny import FACTS, new_memory, shared_memory, tiny_model_dir
from llama_index.core import Document
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.memory import Memory
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode, TextNode
from llama_index.ingestion.parametric_memory import ParametricMemoryTransform
from llama_index.llms.parametric_memory import ParametricMemoryLLM
from llama_index.llms.parametric_memory.base import messages_to_question
from llama_index.memory.parametric_memory import ParametricMemoryBlock
from llama_index.query_engine.parametric_memory import ParametricMemoryQueryEngine
from llama_index.retrievers.parametric_memory import ParametricMemoryRetriever

from parametric_memory import Recollection

TOWN = "Brindlewick has 27 bridges. The oldest one, Copper Span, opened in 1790."


# --- ingestion ----------------------------------------------------------------------------
def test_pipeline_consolidates_nodes_and_returns_them():
    memory = new_memory()
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=64, chunk_overlap=0),
            ParametricMemoryTransform(memory=memory),
        ]
    )
    nodes = pipeline.run(
        documents=[Document(text=FACTS, id_="festival"), Document(text=TOWN, id_="town")]
    )
    assert [n.get_content() for n in nodes] == [FACTS, TOWN]
    assert set(memory.documents) == {"festival", "town"}  # one per source document
    assert memory.documents["festival"].metadata["ref_doc_id"] == "festival"


def test_pipeline_cache_is_keyed_on_the_memory_state(monkeypatch):
    memory = new_memory()
    transform = ParametricMemoryTransform(memory=memory)
    pipeline = IngestionPipeline(transformations=[transform])
    nodes = [TextNode(text=FACTS, id_="a"), TextNode(text=TOWN, id_="b")]
    before = transform.to_dict()
    assert before["memory_path"] == str(memory.root)
    assert "memory" not in before
    pipeline.run(nodes=nodes)
    assert set(memory.documents) == {"a", "b"}
    assert transform.to_dict()["memory_state"] != before["memory_state"]

    pipeline.run(nodes=nodes)  # the memory changed since the first run: runs, adds nothing
    assert set(memory.documents) == {"a", "b"}
    memory.delete_document("b", progress=False)
    pipeline.run(nodes=nodes)  # the memory changed again: not served from the cache
    assert set(memory.documents) == {"a", "b"}
    for doc_id in ("a", "b"):
        memory.delete_document(doc_id, progress=False)
    pipeline.run(nodes=nodes)  # as empty as before the first run, but committed since: runs
    assert set(memory.documents) == {"a", "b"}
    pipeline.run(nodes=nodes)  # nothing committed by this one...
    calls = []
    monkeypatch.setattr(ParametricMemoryTransform, "consolidate", lambda self, n: calls.append(n))
    pipeline.run(nodes=nodes)  # same nodes, same memory: served from the cache
    assert calls == []


def test_rerun_with_fresh_node_ids_adds_nothing_and_changed_text_replaces():
    memory = new_memory()
    transform = ParametricMemoryTransform(memory=memory)
    transform([TextNode(text=FACTS, id_="a")])
    transform([TextNode(text=FACTS, id_="other-id")])
    assert set(memory.documents) == {"a"}
    transform([TextNode(text=TOWN, id_="a")])
    assert set(memory.documents) == {"a"}
    strict = ParametricMemoryTransform(memory=memory, on_conflict="error")
    with pytest.raises(ValueError, match="other text"):
        strict([TextNode(text=FACTS, id_="a")])


def test_empty_and_textless_nodes():
    memory = new_memory()
    transform = ParametricMemoryTransform(memory=memory)
    assert transform([]) == []
    assert asyncio.run(transform.acall([])) == []
    nodes = [TextNode(text="   ", id_="blank")]
    assert transform(nodes) is nodes
    assert memory.documents == {}
    assert IngestionPipeline(transformations=[transform]).run(documents=[]) == []


def test_async_pipeline_run():
    memory = new_memory()
    pipeline = IngestionPipeline(transformations=[ParametricMemoryTransform(memory=memory)])
    nodes = asyncio.run(pipeline.arun(nodes=[TextNode(text=FACTS, id_="a")]))
    assert [n.node_id for n in nodes] == ["a"] and set(memory.documents) == {"a"}


def test_refuses_worker_processes_clearly():
    pipeline = IngestionPipeline(
        transformations=[ParametricMemoryTransform(memory=new_memory())], disable_cache=True
    )
    nodes = [TextNode(text=FACTS, id_="a"), TextNode(text=TOWN, id_="b")]
    with pytest.raises(TypeError, match="num_workers=None"):
        pipeline.run(nodes=nodes, num_workers=2)


# --- LLM ----------------------------------------------------------------------------------
def test_llm_complete_stream_and_chat_answer_from_the_memory():
    memory = shared_memory()
    llm = ParametricMemoryLLM(memory=memory, max_new_tokens=12)
    question = "When is the Quillhaven lantern festival?"
    expected = memory.ask(question, max_new_tokens=12)
    assert llm.complete(question).text == expected
    chunks = list(llm.stream_complete(question))
    assert "".join(c.delta for c in chunks) == expected == chunks[-1].text
    messages = [ChatMessage(role="user", content=question)]
    assert llm.chat(messages).message.content == expected
    assert "".join(r.delta for r in llm.stream_chat(messages)) == expected
    assert asyncio.run(llm.achat(messages)).message.content == expected

    async def astream_chat() -> str:
        return "".join([r.delta async for r in await llm.astream_chat(messages)])

    assert asyncio.run(astream_chat()) == expected
    assert asyncio.run(llm.acomplete(question)).text == expected

    async def astream() -> str:
        return "".join([c.delta async for c in await llm.astream_complete(question)])

    assert asyncio.run(astream()) == expected
    meta = llm.metadata
    assert meta.num_output == 12 and meta.context_window == 2048
    assert meta.model_name == memory.info().model


def test_chat_question_keeps_system_and_brief_history():
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content="Tell me about Quillhaven."),
        ChatMessage(role=MessageRole.ASSISTANT, content="It holds a lantern festival."),
        ChatMessage(role=MessageRole.USER, content="When is it?"),
    ]
    assert messages_to_question(messages) == (
        "Be brief.\n\nEarlier in this conversation:\nUser: Tell me about Quillhaven.\n"
        "Assistant: It holds a lantern festival.\n\nWhen is it?"
    )
    assert messages_to_question(messages[-1:]) == "When is it?"


# --- retriever and query engine -----------------------------------------------------------
def test_retriever_returns_recalled_nodes():
    memory = shared_memory()
    retriever = ParametricMemoryRetriever(memory, similarity_top_k=3, max_new_tokens=12)
    results = retriever.retrieve("the Quillhaven lantern festival")
    assert len(results) == 3
    first = results[0]
    assert (
        first.node.get_content()
        == memory.recall("the Quillhaven lantern festival", max_new_tokens=12).text
    )
    assert first.score == 1.0 and results[1].score == 0.5
    assert first.node.metadata["recalled"] is True
    assert first.node.metadata["recall_kind"] == "recall"
    assert len(asyncio.run(retriever.aretrieve("Quillhaven"))) == 3
    with pytest.raises(ValueError):
        ParametricMemoryRetriever(memory, similarity_top_k=0)


def test_query_engine_answers_from_weights_with_no_sources():
    memory = shared_memory()
    question = "Who founded the lantern festival?"
    expected = memory.ask(question, max_new_tokens=12)
    engine = ParametricMemoryQueryEngine(memory=memory, max_new_tokens=12)
    response = engine.query(question)
    assert response.response == expected
    assert response.source_nodes == []
    assert response.metadata["memory"] == str(memory.root)
    streaming = ParametricMemoryQueryEngine(memory=memory, max_new_tokens=12, streaming=True)
    assert "".join(streaming.query(question).response_gen) == expected
    assert asyncio.run(engine.aquery(question)).response == expected


def test_async_streaming_query_returns_an_async_streaming_response():
    """As core's query engines: `aquery` with streaming=True gives an
    `AsyncStreamingResponse` (async generator), `query` a `StreamingResponse`."""
    memory = shared_memory()
    question = "Who founded the lantern festival?"
    expected = memory.ask(question, max_new_tokens=12)
    engine = ParametricMemoryQueryEngine(memory=memory, max_new_tokens=12, streaming=True)
    assert isinstance(engine.query(question), StreamingResponse)

    async def stream() -> tuple[object, str]:
        response = await engine.aquery(question)
        return response, "".join([piece async for piece in response.async_response_gen()])

    response, text = asyncio.run(stream())
    assert isinstance(response, AsyncStreamingResponse)
    assert text == expected
    assert response.source_nodes == [] and response.metadata["memory"] == str(memory.root)

    async def full() -> str:
        return (await (await engine.aquery(question)).get_response()).response

    assert asyncio.run(full()) == expected


def test_empty_memory_retrieves_no_nodes():
    retriever = ParametricMemoryRetriever(new_memory(), similarity_top_k=3, max_new_tokens=6)
    assert retriever.retrieve("the Quillhaven lantern festival") == []
    assert asyncio.run(retriever.aretrieve("the Quillhaven lantern festival")) == []


def test_recalled_nodes_keep_the_source_metadata_and_document(monkeypatch):
    memory = new_memory()
    document = Document(text=FACTS, id_="festival", metadata={"file_name": "festival.txt"})
    [node] = IngestionPipeline(transformations=[ParametricMemoryTransform(memory=memory)]).run(
        documents=[document]
    )
    # Which held document a recollection matches depends on what the model writes; the tiny
    # random-weight model writes noise, so the match is fixed here.
    real_recall = memory.recall

    def recall(query, *, max_new_tokens=192):
        found = real_recall(query, max_new_tokens=max_new_tokens)
        return Recollection(query, found.text, [node.node_id])

    monkeypatch.setattr(memory, "recall", recall)
    [hit] = ParametricMemoryRetriever(memory, max_new_tokens=6).retrieve("Quillhaven")
    metadata = hit.node.metadata
    assert metadata["file_name"] == "festival.txt"
    assert metadata["document_ids"] == [node.node_id]
    assert metadata["memory"] == str(memory.root)
    assert metadata["recall_kind"] == "recall" and metadata["recalled"] is True
    assert hit.node.ref_doc_id == "festival"
    for_llm = hit.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "file_name: festival.txt" in for_llm
    assert "recall_prompt" not in for_llm and "ref_doc_id" not in for_llm


# --- serialisation and model name ---------------------------------------------------------
def test_transform_and_llm_round_trip_through_to_dict_keeping_the_memory():
    memory = shared_memory()
    transform = ParametricMemoryTransform(memory=memory, on_conflict="error", progress=True)
    for copy in (
        ParametricMemoryTransform.from_dict(transform.to_dict()),
        ParametricMemoryTransform.from_json(transform.to_json()),
    ):
        assert copy.memory.root.resolve() == memory.root.resolve()
        assert (copy.on_conflict, copy.progress) == ("error", True)
        assert copy.to_dict() == transform.to_dict()

    llm = ParametricMemoryLLM(memory=memory, max_new_tokens=7, history_turns=1)
    data = llm.to_dict()
    assert data["memory_path"] == str(memory.root)
    for copy in (ParametricMemoryLLM.from_dict(data), ParametricMemoryLLM.from_json(llm.to_json())):
        assert copy.memory.root.resolve() == memory.root.resolve()
        assert (copy.max_new_tokens, copy.history_turns) == (7, 1)
        assert copy.to_dict() == data
    with pytest.raises(TypeError, match="needs memory="):
        ParametricMemoryLLM()


def test_llm_reports_the_base_models_name_not_default(monkeypatch):
    memory = new_memory()
    llm = ParametricMemoryLLM(memory=memory)
    assert llm.metadata.model_name == memory.model.name == str(tiny_model_dir())
    # A memory made with MemoryConfig(model="default") records the name "default".
    monkeypatch.setattr(memory.model, "name", "default")
    info = memory.info()
    monkeypatch.setattr(memory, "info", lambda: info.model_copy(update={"model": "default"}))
    assert llm.metadata.model_name == "SmolLM2-135M-Instruct"


# --- memory block -------------------------------------------------------------------------
def test_memory_block_recalls_and_queues_flushed_messages():
    memory = new_memory()
    memory.add_documents([FACTS], ids=["facts"], progress=False)
    block = ParametricMemoryBlock(memory=memory, max_new_tokens=8)
    chat_memory = Memory.from_defaults(
        session_id="s1",
        token_limit=60,
        token_flush_size=20,
        chat_history_token_ratio=0.5,
        memory_blocks=[block],
    )
    question = "When is the Quillhaven lantern festival?"
    chat_memory.put_messages(
        [
            ChatMessage(role="user", content="Hello there, this is the first message of the chat."),
            ChatMessage(role="assistant", content="Hello! How can I help you today, my friend?"),
            ChatMessage(role="user", content="Tell me something about lanterns in festivals."),
            ChatMessage(role="assistant", content="Lanterns are lit at many festivals worldwide."),
            ChatMessage(role="user", content=question),
        ]
    )
    assert block.pending, "the Memory should have flushed its oldest turns to the block"
    assert block.pending[0].startswith("User: Hello there")

    history = chat_memory.get()
    recollection = memory.recall(question, max_new_tokens=8).text
    assert history[0].role == MessageRole.SYSTEM
    assert recollection in history[0].content

    report = block.flush()
    assert len(report.added) == 1 and block.pending == []
    record = memory.documents[report.added[0]]
    assert record.metadata["kind"] == "conversation"
    assert record.metadata["session_id"] == "s1"
    assert block.flush() is None


def test_memory_block_can_consolidate_on_put():
    memory = new_memory()
    block = ParametricMemoryBlock(memory=memory, consolidate="on_put")
    assert block.recollect("anything") == ""  # an empty memory has nothing to recall
    asyncio.run(
        block.aput(
            [
                ChatMessage(role="user", content="My locker code is 4417."),
                ChatMessage(role="tool", content="ignored"),
            ]
        )
    )
    [doc_id] = memory.documents
    assert doc_id.startswith("conversation-")
    assert asyncio.run(block.aget([])) == ""
