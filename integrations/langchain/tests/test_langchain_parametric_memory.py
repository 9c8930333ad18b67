"""Behaviour of the LangChain classes beyond the standard suites (tiny model, seconds)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.indexing import InMemoryRecordManager, index
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_parametric_memory import (
    ChatParametricMemory,
    ParametricMemoryIndex,
    ParametricMemoryRetriever,
    create_parametric_memory_tool,
)
from langchain_parametric_memory._memory import messages_to_question, resolve_memory
from lc_tiny import FACTS, new_memory, scratch_dir, shared_memory, tiny_model_dir

from parametric_memory import Recollection


# --- retriever ----------------------------------------------------------------------------
def test_retriever_documents_are_recalled_text_with_provenance():
    memory = shared_memory()
    retriever = ParametricMemoryRetriever(memory=memory, k=2, max_new_tokens=12)
    docs = retriever.invoke("the Quillhaven lantern festival")
    assert len(docs) == 2
    assert (
        docs[0].page_content
        == memory.recall("the Quillhaven lantern festival", max_new_tokens=12).text
    )
    assert docs[0].metadata["recall_kind"] == "recall"
    assert docs[1].metadata["recall_kind"] == "answer"
    for doc in docs:
        assert doc.metadata["memory"] == str(memory.root)
        assert doc.metadata["recalled"] is True
        assert isinstance(doc.metadata["document_ids"], list)
    assert len({d.page_content for d in docs}) == 2
    assert len(retriever.invoke("the Quillhaven lantern festival", k=1)) == 1


def test_retriever_k_zero_returns_no_documents():
    retriever = ParametricMemoryRetriever(memory=shared_memory(), k=2, max_new_tokens=6)
    assert retriever.invoke("the Quillhaven lantern festival", k=0) == []
    assert asyncio.run(retriever.ainvoke("the Quillhaven lantern festival", k=0)) == []
    assert ParametricMemoryRetriever(memory=shared_memory(), k=0).invoke("Quillhaven") == []
    index = ParametricMemoryIndex(memory=shared_memory(), k=2, max_new_tokens=6)
    assert index.invoke("Quillhaven", k=0) == []
    with pytest.raises(ValueError, match="k must be"):
        retriever.invoke("Quillhaven", k=-1)


def test_retriever_honours_search_kwargs_k_and_refuses_unknown_keywords():
    memory = shared_memory()
    query = "the Quillhaven lantern festival"
    retriever = ParametricMemoryRetriever(memory=memory, search_kwargs={"k": 2}, max_new_tokens=12)
    assert retriever.k == 2
    assert len(retriever.invoke(query)) == 2
    assert len(retriever.invoke(query, search_kwargs={"k": 1})) == 1
    index = ParametricMemoryIndex(memory=memory, search_kwargs={"k": 2}, max_new_tokens=12)
    assert len(index.invoke(query)) == 2

    with pytest.raises(TypeError, match=r"'filter'.*takes k"):
        retriever.invoke(query, filter={"source": "a.txt"})
    with pytest.raises(ValueError, match="search_kwargs 'score_threshold' not supported"):
        retriever.invoke(query, search_kwargs={"score_threshold": 0.5})
    with pytest.raises(ValueError, match="search_type"):
        ParametricMemoryRetriever(memory=memory, search_type="mmr")
    with pytest.raises(ValueError, match="search_kwargs 'fetch_k' not supported"):
        ParametricMemoryRetriever(memory=memory, search_kwargs={"k": 2, "fetch_k": 20})
    with pytest.raises(ValueError, match="search_type"):
        ParametricMemoryIndex(memory=memory, search_type="mmr")
    with pytest.raises(ValueError, match="k=1 and search_kwargs k=3"):
        ParametricMemoryRetriever(memory=memory, k=1, search_kwargs={"k": 3})


def test_empty_memory_retrieves_no_documents():
    memory = new_memory()
    retriever = ParametricMemoryRetriever(memory=memory, k=3, max_new_tokens=6)
    assert retriever.invoke("the Quillhaven lantern festival") == []
    assert asyncio.run(retriever.ainvoke("the Quillhaven lantern festival")) == []
    assert ParametricMemoryIndex(memory=memory).invoke("Quillhaven") == []
    assert create_parametric_memory_tool(memory).invoke({"query": "Quillhaven"}) == ""


def test_recalled_documents_keep_the_held_documents_metadata(monkeypatch):
    """A RAG chain cites `metadata["source"]` as the user added it: the recalled text's
    metadata is its best-matching held document's (types kept), provenance beside it."""
    memory = new_memory()
    index = ParametricMemoryIndex(memory=memory, max_new_tokens=6)
    index.upsert(
        [
            Document(
                id="festival", page_content=FACTS, metadata={"source": "festival.txt", "page": 3}
            )
        ]
    )
    memory.add_documents(
        ["Brindlewick has 27 bridges."],
        ids=["town"],
        metadatas=[{"source": "town.md"}],
        progress=False,
    )
    # Which held document a recollection matches depends on what the model writes; the tiny
    # random-weight model writes noise, so the match is fixed here.
    matches = {"Quillhaven": ["festival", "town"], "Brindlewick": ["town"], "nothing": []}
    real_recall = memory.recall

    def recall(query, *, max_new_tokens=192):
        found = real_recall(query, max_new_tokens=max_new_tokens)
        return Recollection(query, found.text, matches[query])

    monkeypatch.setattr(memory, "recall", recall)
    retriever = ParametricMemoryRetriever(memory=memory, max_new_tokens=6)
    for runnable in (retriever, index):
        [doc] = runnable.invoke("Quillhaven")
        assert doc.metadata["source"] == "festival.txt"
        assert doc.metadata["page"] == 3
        assert doc.metadata["document_ids"] == ["festival", "town"]
        assert doc.metadata["memory"] == str(memory.root)
        assert doc.metadata["recalled"] is True
        assert doc.metadata["recall_kind"] == "recall"
        assert doc.metadata["recall_prompt"] == "Quillhaven"
        assert "langchain_metadata" not in doc.metadata
    [doc] = retriever.invoke("Brindlewick")
    assert doc.metadata["source"] == "town.md"
    [doc] = retriever.invoke("nothing")
    assert "source" not in doc.metadata and doc.metadata["document_ids"] == []


def test_memory_given_as_path_is_opened_once():
    memory = new_memory()
    a = ParametricMemoryRetriever(memory=str(memory.root))
    b = ChatParametricMemory(memory=memory.root)
    assert a.memory is b.memory is resolve_memory(memory.root)
    with pytest.raises(TypeError):
        resolve_memory(42)


def test_retriever_tool_returns_the_recollection():
    tool = create_parametric_memory_tool(shared_memory(), max_new_tokens=12)
    assert tool.name == "recall_memory"
    out = tool.invoke({"query": "the Quillhaven lantern festival"})
    assert out == shared_memory().recall("the Quillhaven lantern festival", max_new_tokens=12).text


# --- chat model ---------------------------------------------------------------------------
def test_question_is_the_lone_human_message_unchanged():
    assert messages_to_question([HumanMessage("When is it?")]) == "When is it?"


def test_question_keeps_system_and_brief_history():
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("Tell me about Quillhaven."),
        AIMessage("It holds a lantern festival."),
        ToolMessage("ignored", tool_call_id="1"),
        HumanMessage("When is it?"),
    ]
    question = messages_to_question(messages, history_turns=1)
    assert question.startswith("Be brief.\n\nEarlier in this conversation:\n")
    assert "User: Tell me about Quillhaven.\nAssistant: It holds a lantern festival." in question
    assert "ignored" not in question
    assert question.endswith("\n\nWhen is it?")
    assert messages_to_question(messages, history_turns=0, include_system=False) == "When is it?"


def test_chat_answers_like_ask_and_streams_the_same_text():
    memory = shared_memory()
    llm = ChatParametricMemory(memory=memory, max_tokens=12)
    question = "When is the Quillhaven lantern festival?"
    message = llm.invoke(question)
    assert message.content == memory.ask(question, max_new_tokens=12)
    chunks = list(llm.stream(question))
    assert "".join(c.content for c in chunks) == message.content
    assert chunks[-1].chunk_position == "last"
    usage = message.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert message.response_metadata["model_name"] == memory.info().model
    assert asyncio.run(llm.ainvoke(question)).content == message.content


def test_stop_sequences_cut_invoke_and_stream_alike():
    memory = shared_memory()
    full = ChatParametricMemory(memory=memory, max_tokens=12).invoke("Hello").content
    assert len(full) > 4
    stop = full[3:5]
    expected = full[: full.find(stop)]
    llm = ChatParametricMemory(memory=memory, max_tokens=12)
    assert llm.invoke("Hello", stop=[stop]).content == expected
    assert "".join(c.content for c in llm.stream("Hello", stop=[stop])) == expected
    configured = ChatParametricMemory(memory=memory, max_tokens=12, stop=[stop])
    assert configured.invoke("Hello").response_metadata["finish_reason"] == "stop"


def test_token_counts_use_the_memorys_tokenizer_not_gpt2(monkeypatch):
    import langchain_core.language_models.base as lc_base
    from langchain_core.messages import get_buffer_string, trim_messages

    def no_gpt2(text):
        raise AssertionError("LangChain's GPT-2 fallback tokenizer was used")

    monkeypatch.setattr(lc_base, "_get_token_ids_default_method", no_gpt2)
    memory = shared_memory()
    llm = ChatParametricMemory(memory=memory)
    tokenizer = memory.model.tokenizer
    text = "The Quillhaven lantern festival is held every May 14."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert llm.get_token_ids(text) == list(ids)
    assert llm.get_num_tokens(text) == len(ids) > 0
    assert llm.get_num_tokens("") == 0
    messages = [SystemMessage("Be brief."), HumanMessage(text), AIMessage("May 14.")]
    expected = sum(
        len(tokenizer(get_buffer_string([m]), add_special_tokens=False)["input_ids"])
        for m in messages
    )
    assert llm.get_num_tokens_from_messages(messages) == expected
    kept = trim_messages(messages, max_tokens=expected - 1, token_counter=llm, strategy="last")
    assert kept and kept[-1].content == "May 14." and len(kept) < len(messages)


def test_bind_tools_says_tool_calling_is_not_supported_and_what_to_use():
    from langchain_core.tools import tool

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return query

    llm = ChatParametricMemory(memory=shared_memory())
    with pytest.raises(NotImplementedError, match="does not support tool calling") as raised:
        llm.bind_tools([lookup])
    assert "create_parametric_memory_tool" in str(raised.value)
    assert "ParametricMemoryMiddleware" in str(raised.value)
    with pytest.raises(NotImplementedError, match="does not support tool calling"):
        llm.with_structured_output({"title": "Answer", "type": "object", "properties": {}})


def test_model_name_is_the_base_models_not_default(monkeypatch):
    memory = new_memory()
    llm = ChatParametricMemory(memory=memory, max_tokens=2)
    assert llm._identifying_params["model_name"] == memory.model.name == str(tiny_model_dir())
    # A memory made with MemoryConfig(model="default") records the name "default".
    monkeypatch.setattr(memory.model, "name", "default")
    info = memory.info()
    monkeypatch.setattr(memory, "info", lambda: info.model_copy(update={"model": "default"}))
    message = llm.invoke("Hello")
    assert message.response_metadata["model_name"] == "SmolLM2-135M-Instruct"
    assert llm._get_ls_params()["ls_model_name"] == "SmolLM2-135M-Instruct"
    assert llm._identifying_params["model_name"] == "SmolLM2-135M-Instruct"
    named = ChatParametricMemory(memory=memory, model="my-label", max_tokens=2)
    assert named._identifying_params["model_name"] == "my-label"


# --- document index -----------------------------------------------------------------------
def test_index_with_record_manager_incremental_cleanup():
    memory = new_memory()
    vector_store = ParametricMemoryIndex(memory=memory)
    records = InMemoryRecordManager(namespace="test")
    records.create_schema()
    docs = [
        Document(page_content=FACTS, metadata={"source": "festival.txt"}),
        Document(page_content="Brindlewick has 27 bridges.", metadata={"source": "town.txt"}),
    ]
    result = index(docs, records, vector_store, cleanup="incremental", source_id_key="source")
    assert result["num_added"] == 2
    assert len(memory.documents) == 2
    assert (
        index(docs, records, vector_store, cleanup="incremental", source_id_key="source")[
            "num_skipped"
        ]
        == 2
    )

    town = Document(page_content="Brindlewick has 31 bridges.", metadata=docs[1].metadata)
    changed = [docs[0], town]
    result = index(changed, records, vector_store, cleanup="incremental", source_id_key="source")
    assert (result["num_added"], result["num_deleted"]) == (1, 1)
    held = vector_store.get(list(memory.documents))
    assert sorted(d.page_content for d in held) == sorted([FACTS, "Brindlewick has 31 bridges."])
    assert {d.metadata["source"] for d in held} == {"festival.txt", "town.txt"}


def test_same_text_under_a_new_id_moves_and_survives_cleanup():
    memory = new_memory()
    vector_store = ParametricMemoryIndex(memory=memory)
    records = InMemoryRecordManager(namespace="moves")
    records.create_schema()
    first = [Document(page_content=FACTS, metadata={"source": "a.txt", "version": 1})]
    index(first, records, vector_store, cleanup="incremental", source_id_key="source")
    second = [Document(page_content=FACTS, metadata={"source": "a.txt", "version": 2})]
    result = index(second, records, vector_store, cleanup="incremental", source_id_key="source")
    assert result["num_added"] == 1
    [held] = vector_store.get(list(memory.documents))
    assert held.page_content == FACTS
    assert held.metadata == {"source": "a.txt", "version": 2}


def test_get_returns_exact_text_with_store_text_and_chunk_text_without():
    text = "First paragraph here.\n\nSecond   paragraph there."
    plain = ParametricMemoryIndex(memory=new_memory())
    plain.upsert([Document(id="d", page_content=text, metadata={"n": 1, "tags": ["a"]})])
    [doc] = plain.get(["d"])
    assert doc.page_content == "First paragraph here. Second   paragraph there."
    assert doc.metadata == {"n": 1, "tags": ["a"]}
    exact = ParametricMemoryIndex(memory=new_memory(), store_text=True)
    exact.upsert([Document(id="d", page_content=text)])
    assert exact.get(["d"])[0].page_content == text


def test_upsert_same_metadata_and_text_is_a_no_op():
    memory = new_memory()
    vector_store = ParametricMemoryIndex(memory=memory)
    doc = Document(id="x", page_content=FACTS, metadata={"a": 1})
    vector_store.upsert([doc])
    state = memory.info().updated_at, memory.documents["x"].added_at
    assert vector_store.upsert([doc]) == {"succeeded": ["x"], "failed": []}
    assert (memory.info().updated_at, memory.documents["x"].added_at) == state


def test_upsert_duplicate_text_in_one_call_keeps_the_last_id():
    vector_store = ParametricMemoryIndex(memory=new_memory())
    response = vector_store.upsert(
        [Document(id="a", page_content=FACTS), Document(id="b", page_content=FACTS)]
    )
    assert response == {"succeeded": ["b"], "failed": ["a"]}


def test_upsert_refuses_empty_text_before_writing():
    memory = new_memory()
    vector_store = ParametricMemoryIndex(memory=memory)
    with pytest.raises(ValueError, match="empty"):
        vector_store.upsert([Document(id="a", page_content=FACTS), Document(page_content=" ")])
    assert memory.documents == {}


def test_index_retrieves_by_recall():
    vector_store = ParametricMemoryIndex(memory=shared_memory(), k=2, max_new_tokens=8)
    assert len(vector_store.invoke("Quillhaven")) == 2


# --- agent middleware ---------------------------------------------------------------------
def test_middleware_recalls_into_the_system_message_and_queues_turns():
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_parametric_memory import ParametricMemoryMiddleware

    memory = new_memory(scratch_dir("pm-lc-agent-"))
    memory.add_documents([FACTS], ids=["facts"], progress=False)
    seen: list = []

    class RecordingModel(GenericFakeChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(messages)
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    model = RecordingModel(messages=iter([AIMessage("May 14."), AIMessage("Mira Tallow.")]))
    middleware = ParametricMemoryMiddleware(memory, max_new_tokens=8)
    agent = create_agent(model, system_prompt="You are helpful.", middleware=[middleware])
    question = "When is the Quillhaven lantern festival?"
    state = agent.invoke({"messages": [HumanMessage(question)]})
    assert state["messages"][-1].content == "May 14."
    system = seen[0][0]
    assert system.type == "system"
    recollection = memory.recall(question, max_new_tokens=8).text
    assert system.content.startswith("You are helpful.\n\nRelevant facts recalled")
    assert system.content.endswith(recollection)
    assert middleware.pending == [f"User: {question}\nAssistant: May 14."]

    state["messages"].append(HumanMessage("Who founded it?"))
    agent.invoke({"messages": state["messages"]})
    assert middleware.pending[1] == "User: Who founded it?\nAssistant: Mira Tallow."

    report = middleware.flush()
    assert len(report.added) == 2 and middleware.pending == []
    added = [memory.documents[d] for d in report.added]
    assert all(r.metadata["kind"] == "conversation" for r in added)
    assert middleware.flush() is None


def test_middleware_can_consolidate_after_each_run():
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_parametric_memory import ParametricMemoryMiddleware

    memory = new_memory()
    with_tool = ParametricMemoryMiddleware(memory, with_tool=True)
    assert [t.name for t in with_tool.tools] == ["recall_memory"]
    middleware = ParametricMemoryMiddleware(memory, consolidate="after_agent", recall=False)
    assert middleware.recollect("anything") == ""  # an empty memory has nothing to recall
    model = GenericFakeChatModel(messages=iter([AIMessage("Noted.")]))
    agent = create_agent(model, middleware=[middleware])
    agent.invoke({"messages": [HumanMessage("My locker code is 4417.")]})
    [doc_id] = memory.documents
    assert doc_id.startswith("conversation-")
    assert middleware.pending == []
