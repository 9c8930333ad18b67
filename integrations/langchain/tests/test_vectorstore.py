"""`ParametricMemoryVectorStore`: a parametric memory in place of a vector store (tiny model),
and the other classes creating a memory from a `MemoryConfig`."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_parametric_memory import (
    ChatParametricMemory,
    ParametricMemoryIndex,
    ParametricMemoryRetriever,
    ParametricMemoryVectorStore,
)
from langchain_parametric_memory import vectorstores as vectorstores_module
from lc_tiny import FACTS, new_memory, scratch_dir, shared_memory, tiny_config

from parametric_memory import MemoryConfig, MemoryNotFoundError, Recollection

TOWN = "Brindlewick has 27 bridges."
QUERY = "the Quillhaven lantern festival"


def fix_matches(monkeypatch: pytest.MonkeyPatch, memory, ids: list[str]) -> None:
    """Which held document a recollection matches depends on what the model writes; the tiny
    random-weight model writes noise, so the match is fixed here."""
    real_recall = memory.recall

    def recall(query, *, max_new_tokens=192):
        return Recollection(query, real_recall(query, max_new_tokens=max_new_tokens).text, ids)

    monkeypatch.setattr(memory, "recall", recall)


# --- the swap ---------------------------------------------------------------------------
def test_one_line_swap_creates_a_memory_and_retrieves_with_the_held_metadata(monkeypatch):
    folder = scratch_dir("pm-lc-vs-") / "memory"
    docs = [
        Document(page_content=FACTS, metadata={"source": "festival.txt", "page": 3}),
        Document(page_content=TOWN, metadata={"source": "town.txt"}),
    ]
    store = ParametricMemoryVectorStore.from_documents(
        docs, embedding=None, memory_path=folder, memory_config=tiny_config(), max_new_tokens=8
    )
    assert isinstance(store, VectorStore) and store.embeddings is None
    assert len(store.memory.documents) == 2 and store.memory.root == folder.resolve()
    festival = next(
        d for d, r in store.memory.documents.items() if r.metadata["source"] == "festival.txt"
    )
    fix_matches(monkeypatch, store.memory, [festival])

    retriever = store.as_retriever(search_kwargs={"k": 2})
    assert isinstance(retriever, ParametricMemoryRetriever)
    found = retriever.invoke(QUERY)
    assert len(found) == 2 and all(isinstance(d, Document) for d in found)
    for doc in found:
        assert doc.metadata["source"] == "festival.txt" and doc.metadata["page"] == 3
        assert doc.metadata["document_ids"] == [festival] and doc.metadata["recalled"] is True
    assert [d.page_content for d in found] == [
        d.page_content for d in store.similarity_search(QUERY, k=2)
    ]
    assert len(store.as_retriever().invoke(QUERY)) <= 4
    assert store.as_retriever().k == 4  # a vector store retriever's default
    assert store.as_retriever(search_type="similarity", k=1).k == 1


def test_embedding_is_accepted_and_ignored_with_one_warning(monkeypatch):
    monkeypatch.setattr(vectorstores_module, "_warned_of_embedding", False)
    embedding = DeterministicFakeEmbedding(size=8)
    memory = new_memory()
    with pytest.warns(UserWarning, match="needs no embeddings") as caught:
        store = ParametricMemoryVectorStore.from_texts([FACTS], embedding, memory_path=memory.root)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert store.embeddings is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ParametricMemoryVectorStore.from_texts([FACTS], embedding, memory_path=memory.root)
        ParametricMemoryVectorStore(memory, embedding=embedding)


def test_similarity_search_is_the_retrievers_recall_with_rank_scores():
    memory = shared_memory()
    store = ParametricMemoryVectorStore(memory, max_new_tokens=12)
    expected = ParametricMemoryRetriever(memory=memory, k=2, max_new_tokens=12).invoke(QUERY)
    assert store.similarity_search(QUERY, k=2) == expected
    scored = store.similarity_search_with_score(QUERY, k=2)
    assert [doc for doc, _ in scored] == expected
    assert [score for _, score in scored] == [1.0, 0.5]
    assert store.similarity_search_with_relevance_scores(QUERY, k=2) == scored
    assert store.similarity_search(QUERY, k=0) == []
    assert asyncio.run(store.asimilarity_search(QUERY, k=2)) == expected
    assert ParametricMemoryVectorStore(new_memory()).similarity_search(QUERY) == []


# --- writing and reading by id ----------------------------------------------------------
def test_add_get_delete_round_trip():
    memory = new_memory()
    store = ParametricMemoryVectorStore(memory)
    ids = store.add_texts(
        [FACTS, TOWN],
        metadatas=[{"source": "a.txt", "page": 1}, {"source": "b.txt"}],
        ids=["a", "b"],
    )
    assert ids == ["a", "b"] and set(memory.documents) == {"a", "b"}
    got = {d.id: d for d in store.get_by_ids(["b", "a", "missing"])}
    assert got["a"].page_content == FACTS and got["a"].metadata == {"source": "a.txt", "page": 1}
    assert got["b"].metadata == {"source": "b.txt"} and set(got) == {"a", "b"}

    assert store.delete(["a", "missing"]) is True
    assert store.get_by_ids(["a"]) == [] and set(memory.documents) == {"b"}
    [new_id] = asyncio.run(store.aadd_documents([Document(page_content="Mira Tallow lit it.")]))
    assert asyncio.run(store.aget_by_ids([new_id]))[0].page_content == "Mira Tallow lit it."
    assert asyncio.run(store.adelete([new_id])) is True
    assert set(memory.documents) == {"b"}


def test_ids_come_from_the_call_the_document_or_the_held_text():
    memory = new_memory()
    store = ParametricMemoryVectorStore(memory)
    doc = Document(page_content=FACTS, metadata={"n": 1})
    [first] = store.add_documents([doc])
    assert doc.id is None  # the caller's document is left as it was
    state = memory.info().updated_at
    assert store.add_documents([doc, doc]) == [first, first]  # held already: nothing to do
    assert memory.info().updated_at == state
    assert store.add_documents([Document(id="mine", page_content=TOWN)]) == ["mine"]
    assert store.add_texts([TOWN], ids=["given"]) == ["given"]  # the text moves to the new id
    assert set(memory.documents) == {first, "given"}


def test_from_texts_on_an_existing_folder_adds_only_new_texts():
    folder = scratch_dir("pm-lc-vs-existing-")
    memory = new_memory(folder)
    memory.add_documents(
        [FACTS], ids=["quillhaven"], metadatas=[{"source": "f.txt"}], progress=False
    )
    added_at = memory.documents["quillhaven"].added_at

    texts, metadatas = [FACTS, TOWN], [{"source": "f.txt"}, {"source": "t.txt"}]
    store = ParametricMemoryVectorStore.from_texts(texts, metadatas=metadatas, memory_path=folder)
    ids = [d for d in store.memory.documents if d != "quillhaven"]
    assert len(ids) == 1 and store.memory.documents["quillhaven"].added_at == added_at
    state = store.memory.info().updated_at
    again = ParametricMemoryVectorStore.from_texts(texts, metadatas=metadatas, memory_path=folder)
    assert again.memory is store.memory  # a folder is opened once per process
    assert again.add_texts(texts, metadatas) == ["quillhaven", ids[0]]
    assert store.memory.info().updated_at == state


# --- bad arguments ----------------------------------------------------------------------
def test_bad_arguments_get_clear_errors():
    store = ParametricMemoryVectorStore(shared_memory())
    with pytest.raises(TypeError, match="needs memory_path="):
        ParametricMemoryVectorStore.from_texts([FACTS])
    with pytest.raises(TypeError, match=r"'persist_directory'.*takes memory_path"):
        ParametricMemoryVectorStore.from_texts([FACTS], persist_directory="db")
    with pytest.raises(TypeError, match="memory_path and memory"):
        ParametricMemoryVectorStore.from_texts([FACTS], memory_path="a", memory="b")
    with pytest.raises(ValueError, match="got 2 documents but 1 metadatas"):
        store.add_texts([FACTS, TOWN], metadatas=[{}])
    with pytest.raises(ValueError, match="got 1 documents but 2 ids"):
        store.add_texts([FACTS], ids=["a", "b"])
    with pytest.raises(TypeError, match="list of texts"):
        store.add_texts(FACTS)
    with pytest.raises(TypeError, match=r"'filter'.*it takes k"):
        store.similarity_search(QUERY, filter={"source": "a.txt"})
    with pytest.raises(ValueError, match="k must be"):
        store.similarity_search(QUERY, k=-1)
    with pytest.raises(ValueError, match="search_type 'mmr' not supported"):
        store.as_retriever(search_type="mmr")
    with pytest.raises(ValueError, match="search_kwargs 'filter' not supported"):
        store.as_retriever(search_kwargs={"filter": {}})
    with pytest.raises(ValueError, match="needs a list of ids"):
        store.delete()
    with pytest.raises(NotImplementedError, match="has no vectors"):
        store.max_marginal_relevance_search(QUERY)
    with pytest.raises(NotImplementedError, match="has no vectors"):
        store.similarity_search_by_vector([0.0])


def test_memory_config_of_an_existing_memory_must_match():
    memory = new_memory()
    other = tiny_config().model_copy(update={"seed": tiny_config().seed + 1})
    with pytest.raises(ValueError, match="another MemoryConfig"):
        ParametricMemoryVectorStore(memory.root, memory_config=other)
    with pytest.raises(ValueError, match="another MemoryConfig"):
        ParametricMemoryRetriever(memory=memory, memory_config=other)
    assert (
        ParametricMemoryVectorStore(memory.root, memory_config=tiny_config()).memory.root
        == memory.root
    )


# --- creating a memory from the other classes --------------------------------------------
def test_retriever_chat_and_index_create_a_memory_from_a_memory_config():
    folder = scratch_dir("pm-lc-create-") / "memory"
    with pytest.raises(MemoryNotFoundError):
        ParametricMemoryRetriever(memory=folder)  # no config: only an existing memory opens
    retriever = ParametricMemoryRetriever(memory=folder, memory_config=tiny_config().model_dump())
    assert isinstance(retriever.memory_config, MemoryConfig)
    assert retriever.memory.documents == {} and (folder / "manifest.json").is_file()
    chat = ChatParametricMemory(memory=str(folder))
    index = ParametricMemoryIndex(memory=folder, memory_config=tiny_config())
    store = ParametricMemoryVectorStore(folder)
    assert chat.memory is retriever.memory is index.memory is store.memory  # one model in RAM
