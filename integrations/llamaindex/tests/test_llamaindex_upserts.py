"""Upserts and deletions through a real `IngestionPipeline` + `SimpleDocumentStore`, and the
index-style `refresh_ref_docs` / `delete_ref_doc`, on the tiny model."""

from __future__ import annotations

import asyncio

import pytest
from li_tiny import FACTS, new_memory
from llama_index.core import Document
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.ingestion.parametric_memory import (
    ParametricMemoryTransform,
    ParametricMemoryVectorStore,
)

from parametric_memory import ParametricMemory
from parametric_memory import store as memory_store
from parametric_memory.documents import content_hash

TOWN = "Brindlewick has 27 bridges. The oldest one, Copper Span, opened in 1790."
MOVED = (
    "The Quillhaven lantern festival is held every June 2. "
    "Its founder, Mira Tallow, lit the first lantern in 1911."
)


def festival(text: str = FACTS) -> Document:
    return Document(text=text, id_="festival", metadata={"file_name": "festival.txt"})


def town() -> Document:
    return Document(text=TOWN, id_="town", metadata={"file_name": "town.txt"})


def splitter() -> SentenceSplitter:
    """Two nodes per document, overlapping."""
    return SentenceSplitter(chunk_size=20, chunk_overlap=4)


def pipeline(
    memory: ParametricMemory, strategy: DocstoreStrategy, relay: bool = True
) -> IngestionPipeline:
    """Split, then consolidate; `relay`: the transform's vector store carries deletions."""
    transform = ParametricMemoryTransform(memory=memory)
    return IngestionPipeline(
        transformations=[splitter(), transform],
        docstore=SimpleDocumentStore(),
        vector_store=transform.as_vector_store() if relay else None,
        docstore_strategy=strategy,
    )


def committed_state(memory: ParametricMemory) -> str | None:
    return memory_store.read_manifest(memory.root).state


def test_a_split_document_is_one_memory_document():
    memory = new_memory()
    transform = ParametricMemoryTransform(memory=memory)
    document = festival()
    nodes = IngestionPipeline(transformations=[splitter(), transform]).run(documents=[document])
    assert len(nodes) > 1
    [(doc_id, record)] = memory.documents.items()
    assert doc_id == "festival"
    assert record.content_hash == content_hash(FACTS)  # the splits joined, overlap once
    assert record.metadata == {
        "file_name": "festival.txt",
        "ref_doc_id": "festival",
        "ref_doc_hash": document.hash,
    }
    assert transform.refresh_ref_docs([document]) == [False]  # whole or split: one version


@pytest.mark.parametrize("relay", [True, False], ids=["vector-store-slot", "transform-only"])
@pytest.mark.filterwarnings("ignore:docstore_strategy=:UserWarning")  # transform-only fallback
def test_a_changed_document_is_relearned_and_an_unchanged_one_left_alone(relay):
    memory = new_memory()
    ingest = pipeline(memory, DocstoreStrategy.UPSERTS, relay)
    ingest.run(documents=[festival(), town()])
    before = memory.documents
    assert set(before) == {"festival", "town"}

    ingest.run(documents=[festival(MOVED), town()])
    after = memory.documents
    assert set(after) == {"festival", "town"}
    assert after["festival"].content_hash == content_hash(MOVED)
    assert before["festival"].content_hash not in {r.content_hash for r in after.values()}
    assert after["town"] == before["town"]  # neither forgotten nor retrained

    state = committed_state(memory)
    ingest.run(documents=[festival(MOVED), town()])
    assert committed_state(memory) == state  # nothing unchanged is trained again


def test_upserts_and_delete_forgets_a_removed_document_and_relearns_it_when_back():
    memory = new_memory()
    ingest = pipeline(memory, DocstoreStrategy.UPSERTS_AND_DELETE)
    ingest.run(documents=[festival(), town()])
    kept = memory.documents["festival"]

    asyncio.run(ingest.arun(documents=[festival()]))
    assert memory.documents == {"festival": kept}

    ingest.run(documents=[festival(), town()])
    assert set(memory.documents) == {"festival", "town"}
    assert memory.documents["town"].content_hash == content_hash(TOWN)


def test_refresh_ref_docs_and_delete_ref_doc(caplog):
    memory = new_memory()
    transform = ParametricMemoryTransform(memory=memory, on_conflict="error")
    assert transform.refresh_ref_docs([festival(), town()]) == [True, True]
    assert transform.refresh_ref_docs([festival(), town()]) == [False, False]
    old = memory.documents["festival"].content_hash
    assert transform.refresh_ref_docs([festival(MOVED), town()]) == [True, False]
    held = memory.documents
    assert held["festival"].content_hash == content_hash(MOVED)
    assert old not in {r.content_hash for r in held.values()}

    transform.delete_ref_doc("festival")
    assert set(memory.documents) == {"town"}
    transform.delete_ref_doc("festival")  # not held: logged, as BaseIndex does
    assert "festival not found" in caplog.text
    asyncio.run(transform.adelete_ref_doc("town"))
    assert memory.documents == {}
    assert asyncio.run(transform.arefresh_ref_docs([town()])) == [True]


def test_the_vector_store_slot_only_relays_deletions():
    memory = new_memory()
    store = ParametricMemoryTransform(memory=memory).as_vector_store()
    assert isinstance(store, ParametricMemoryVectorStore) and store.client is memory
    assert store.add(splitter()([town()])) != []
    assert memory.documents == {}
    store.delete("town")  # not held: nothing to do
    with pytest.raises(NotImplementedError, match="ParametricMemoryRetriever"):
        store.query(VectorStoreQuery(query_str="bridges"))
