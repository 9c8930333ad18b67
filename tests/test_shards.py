"""Adapter shards: documents fill shards in order (one-document shards shortest first), a
new shard leaves the committed ones untouched, questions are answered with the weights of
the shard BM25 routes them to, and forgetting a shard's last document removes the shard."""

from __future__ import annotations

import pytest

from parametric_memory import ParametricMemory, ShardingConfig, store
from parametric_memory.records import Chunk
from parametric_memory.routing import ShardRouter
from parametric_memory.store.verify import verify_memory

DOCS = {
    "brindlewick": "New hires at Brindlewick Analytics get 27 vacation days in Quillhaven.",
    "zorbian": "The Zorbian festival is held every May 14 and draws 3,400 visitors to Orsk.",
    "kelp": "Marrow Bay harvests violet kelp each October using copper rakes.",
}
QUESTION = {
    "brindlewick": "How many vacation days do Brindlewick hires get?",
    "zorbian": "When is the Zorbian festival held?",
    "kelp": "What colour is the kelp harvested in Marrow Bay?",
}


def _chunk(document_id: str) -> Chunk:
    text = DOCS[document_id]
    return Chunk(f"{document_id}-0", document_id, 0, text, len(text.split()))


def _sharded(tmp_path, tiny_config, per_shard: int | None) -> ParametricMemory:
    config = tiny_config.model_copy(
        update={"sharding": ShardingConfig(documents_per_shard=per_shard)}
    )
    return ParametricMemory.create(tmp_path / f"mem-{per_shard}", config)


def _add(memory: ParametricMemory, *ids: str) -> None:
    memory.add_documents([DOCS[i] for i in ids], ids=list(ids), progress=False)


def test_router_picks_the_shard_of_the_best_matching_chunk():
    router = ShardRouter([_chunk(d) for d in DOCS], {"brindlewick": 0, "zorbian": 1, "kelp": 2})
    questions = [QUESTION["zorbian"], QUESTION["kelp"], QUESTION["brindlewick"]]
    assert router.shards_for(questions) == [1, 2, 0]
    assert router.documents_for("violet kelp with copper rakes", limit=3)[0] == "kelp"


def test_a_query_sharing_no_word_goes_to_the_newest_shard():
    router = ShardRouter([_chunk(d) for d in DOCS], {"brindlewick": 0, "zorbian": 1, "kelp": 2})
    assert router.shards_for(["xyzzy plugh"]) == [2]


def test_the_router_matches_inflected_forms_of_a_word():
    ferry = Chunk("ferry-0", "ferry", 0, "The old ferry crossed the river twice a day.", 9)
    mill = Chunk("mill-0", "mill", 0, "A windmill stands beside the harbour wall.", 7)
    # no word of the question appears as such in either chunk: only stems link it to the ferry
    assert ShardRouter([ferry, mill], {"ferry": 0, "mill": 1}).shards_for(
        ["Which ferries cross rivers?"]
    ) == [0]


@pytest.mark.parametrize(
    ("per_shard", "expected"),
    # a shard each: shortest first (kelp, brindlewick, zorbian); shared shards: ingest order
    [(1, [1, 2, 0]), (2, [0, 0, 1]), (None, [0] * 3)],
)
def test_documents_fill_shards_in_order(tmp_path, tiny_config, per_shard, expected):
    memory = _sharded(tmp_path, tiny_config, per_shard)
    _add(memory, *DOCS)
    assert [memory.documents[d].shard for d in DOCS] == expected
    assert memory.info().shards == len(set(expected))
    assert verify_memory(memory.root) == []


def test_a_new_shard_leaves_committed_shards_and_their_answers_untouched(tmp_path, tiny_config):
    memory = _sharded(tmp_path, tiny_config, 1)
    _add(memory, "brindlewick")
    first = store.shard_weights(memory.root, store.read_manifest(memory.root), 0)
    before = store.file_sha256(first), memory.ask(QUESTION["brindlewick"])
    _add(memory, "zorbian")
    manifest = store.read_manifest(memory.root)
    after = store.file_sha256(store.shard_weights(memory.root, manifest, 0))
    assert (after, memory.ask(QUESTION["brindlewick"])) == before
    reopened = ParametricMemory.open(memory.root)
    assert reopened.ask_batch([QUESTION["brindlewick"]]) == [before[1]]


def test_questions_are_answered_with_their_shards_weights(tmp_path, tiny_config):
    memory = _sharded(tmp_path, tiny_config, 1)
    _add(memory, "brindlewick", "zorbian")
    alone = _sharded(tmp_path / "alone", tiny_config, 1)
    _add(alone, "zorbian")
    # Shard 1 of `memory` was trained exactly like `alone`'s only shard.
    assert memory.ask(QUESTION["zorbian"]) == alone.ask(QUESTION["zorbian"])
    batch = memory.ask_batch([QUESTION["zorbian"], QUESTION["brindlewick"]])
    assert batch == [memory.ask(QUESTION["zorbian"]), memory.ask(QUESTION["brindlewick"])]


def test_forgetting_a_shards_last_document_removes_the_shard(tmp_path, tiny_config):
    memory = _sharded(tmp_path, tiny_config, 1)
    _add(memory, "brindlewick", "zorbian")
    memory.delete_document("zorbian")
    manifest = store.read_manifest(memory.root)
    assert memory.info().shards == 1
    assert store.shard_weights(memory.root, manifest, 1) is None
    assert verify_memory(memory.root) == []
