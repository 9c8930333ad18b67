"""Fresh one-document shards consolidated at once, each in its own slot of a stacked adapter,
give the memory that consolidating them one by one gives (up to rounding)."""

from __future__ import annotations

import json
import logging
import os
import random

import pytest
import torch
from test_consolidate import CUDA, adapter_params, adapter_weights, no_host_syncs, student
from test_distributed import IDS, TEXTS, _records, _weights
from test_fast_generation import model_dir, random_examples  # noqa: F401

from parametric_memory import ParametricMemory
from parametric_memory import ingest as ingest_module
from parametric_memory.cli import prefer_expandable_segments
from parametric_memory.config import (
    ChunkingConfig,
    ConsolidationConfig,
    SelectionConfig,
    ShardingConfig,
)
from parametric_memory.documents import make_documents
from parametric_memory.engine import slot_training
from parametric_memory.engine.adapter_slots import AdapterSlots
from parametric_memory.engine.slot_training import _passes, _train_steps, train_slots
from parametric_memory.ingest import Ingest
from parametric_memory.method import transformation
from parametric_memory.method.consolidate import train_student
from parametric_memory.schedule import training_batches
from parametric_memory.sharding import group_shards
from parametric_memory.store.verify import verify_memory

CONFIG = ConsolidationConfig(epochs=2, batch_size=3, learning_rate=1e-2)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def _restore(lm, weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for param, saved in zip(adapter_params(lm), weights, strict=True):
            param.copy_(saved)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "passes, grouped", [("one pass", False), ("a pass per row", False), ("one pass", True)]
)
def test_each_slot_trains_as_its_document_would_alone(
    model_dir,  # noqa: F811
    device,
    passes,
    grouped,
    monkeypatch,
):
    if passes == "a pass per row":
        monkeypatch.setattr(slot_training, "_PASS_TOKENS", 1)
    config = CONFIG.model_copy(update={"length_grouped_batches": grouped})
    lm = student(model_dir, device)
    documents = [random_examples(lm.model, n, seed=s) for n, s in ((5, 1), (7, 2), (2, 3))]
    start = adapter_weights(lm)
    slots = AdapterSlots(lm, 3)
    together = train_slots(lm, slots, documents, config, [random.Random(i) for i in range(3)])
    assert [stats.steps for stats in together] == [4, 6, 2]  # 2 epochs of ceil(n / 3)
    for slot, examples in enumerate(documents):
        _restore(lm, start)
        alone = train_student(lm, examples, config, random.Random(slot))
        expected = adapter_weights(lm)
        slots.copy_to_adapter(slot)
        moved = max((e - s).abs().max() for e, s in zip(expected, start, strict=True))
        assert moved > 1e-3  # training did change the adapter
        for actual, wanted in zip(adapter_weights(lm), expected, strict=True):
            torch.testing.assert_close(actual, wanted, rtol=1e-3, atol=2e-4)
        assert together[slot].first_loss == pytest.approx(alone.first_loss, rel=1e-4)
        assert together[slot].last_loss == pytest.approx(alone.last_loss, rel=1e-3)


def test_rows_of_one_slot_share_its_copy_and_get_the_gathered_result(model_dir):  # noqa: F811
    """`use_rows(..., only_slot=k)`: one copy of slot k for every row instead of one per
    row, the same KL sums and the same gradient, into slot k only."""
    lm = student(model_dir)
    slots = AdapterSlots(lm, 3)
    with torch.no_grad():
        slots.weights.add_(torch.randn_like(slots.weights) * 0.05)  # slots differ
    examples = random_examples(lm.model, 4, seed=5)
    results = []
    for only_slot in (None, 1):
        slots.weights.grad = None
        with slots.attached():
            kl = slot_training._row_kl_sums(lm, slots, examples, torch.ones(4).long(), only_slot)
            kl.sum().backward()
        results.append((kl.detach(), slots.weights.grad.clone()))
    (gathered, gathered_grad), (shared, shared_grad) = results
    torch.testing.assert_close(shared, gathered)
    torch.testing.assert_close(shared_grad, gathered_grad)
    assert shared_grad[1].abs().sum() > 0 and not shared_grad[[0, 2]].any()


@CUDA
def test_training_steps_never_wait_for_the_gpu(model_dir):  # noqa: F811
    """A host-device sync in the loop would stop the host from queueing the next pass while
    the GPU computes this one (the 128-document step is bound by the host)."""
    lm = student(model_dir, "cuda")
    documents = [random_examples(lm.model, n, seed=s) for n, s in ((5, 1), (3, 2))]
    plans = [training_batches(d, CONFIG, random.Random(i)) for i, d in enumerate(documents)]
    slots = AdapterSlots(lm, 2)
    with slots.attached():
        lm.model.train()
        _train_steps(lm, slots, plans, CONFIG)  # first calls allocate and load kernels
        with no_host_syncs():
            losses, _ = _train_steps(lm, slots, plans, CONFIG)
    assert all(bool(torch.isfinite(loss).all()) for loss in losses)


def test_a_slot_whose_gradient_is_not_finite_keeps_its_weights(model_dir):  # noqa: F811
    lm = student(model_dir)
    documents = [random_examples(lm.model, 2, seed=s) for s in (1, 2)]
    for example in documents[1]:
        example.topk_logprobs = torch.full_like(example.topk_logprobs, float("nan"))
    slots = AdapterSlots(lm, 2)
    start = slots.weights.detach().clone()
    stats = train_slots(lm, slots, documents, CONFIG, [random.Random(0), random.Random(1)])
    assert stats[0].skipped_steps == 0 and stats[1].skipped_steps == stats[1].steps == 2
    assert torch.equal(slots.weights[1], start[1])
    assert not torch.equal(slots.weights[0], start[0])


def test_an_empty_document_sits_out_while_the_others_train(model_dir):  # noqa: F811
    lm = student(model_dir)
    slots = AdapterSlots(lm, 2)
    start = slots.weights.detach().clone()
    documents = [[], random_examples(lm.model, 3, seed=4)]
    stats = train_slots(lm, slots, documents, CONFIG, [random.Random(0), random.Random(1)])
    assert stats[0].steps == 0 and stats[1].steps == 2
    assert torch.equal(slots.weights[0], start[0])


def test_runs_of_shards_that_fit_are_grouped_up_to_the_width():
    fits = {1, 2, 3, 5, 6}.__contains__
    assert group_shards([1, 2, 3, 4, 5, 6], fits, 2) == [
        (True, [1, 2]),
        (True, [3]),
        (False, [4]),
        (True, [5, 6]),
    ]
    assert group_shards([1, 2, 4], fits, 1) == [(False, [1]), (False, [2]), (False, [4])]


LONG = " ".join(f"Sentence {i} says the Orsk ferry sails at {i} o'clock." for i in range(12))


def test_a_memory_ingested_together_is_the_one_ingested_one_by_one(tmp_path, tiny_config, caplog):
    def memory(name: str, width: int) -> ParametricMemory:
        config = tiny_config.model_copy(
            update={
                "dtype": "float32",  # the tolerances below are float32 rounding, on any device
                "sharding": ShardingConfig(documents_per_shard=1, shards_in_parallel=width),
                "consolidation": tiny_config.consolidation.model_copy(
                    update={"chunks_per_transformation": 1}
                ),
                "chunking": ChunkingConfig(chunk_tokens=64),
            }
        )
        return ParametricMemory.create(tmp_path / name, config)

    texts, ids = [*TEXTS[:3], LONG, *TEXTS[3:]], [*IDS[:3], "long", *IDS[3:]]
    alone, together = memory("alone", 1), memory("together", 2)
    caplog.set_level(logging.INFO, logger="parametric_memory.method.transformation")
    for held in (alone, together):
        report = held.add_documents(texts[:1], ids=ids[:1], progress=False)
        report = held.add_documents(texts[1:], ids=ids[1:], progress=False)
        assert report.added == ids[1:]  # as given; "long" was consolidated last
    grouped = [r.getMessage() for r in caplog.records if "documents together" in r.message]
    assert len(grouped) > 3 and all("T of 2 documents together" in m for m in grouped[1:-1])
    long = together.documents["long"]  # a section a chunk, trained two at a time as well
    assert long.chunks > 1 and len(long.sections) == long.chunks == long.sections_planned
    assert {d: r.shards for d, r in together.documents.items()} == {
        d: r.shards for d, r in alone.documents.items()
    }
    for name in ("chunks.jsonl", "transfer_set.jsonl"):
        assert _records(together, name) == _records(alone, name)
    expected = _weights(alone)
    for shard, weights in _weights(together).items():
        for key, tensor in weights.items():
            torch.testing.assert_close(tensor, expected[shard][key], rtol=1e-3, atol=2e-4)
    question = ["How long is the Teskel bridge?"]
    assert together.ask_batch(question) == alone.ask_batch(question)
    reopened = ParametricMemory.open(tmp_path / "together")
    assert reopened.ask_batch(question) == alone.ask_batch(question)


def test_one_document_shards_are_planned_fewest_chunks_then_shortest_first(tmp_path, tiny_config):
    config = tiny_config.model_copy(update={"chunking": ChunkingConfig(chunk_tokens=64)})
    memory = ParametricMemory.create(tmp_path / "mem", config)
    texts = [LONG, "Kelp grows fast off Orsk in the cold months of the year.", "Ferries sail."]
    plan = Ingest(memory.writer(), make_documents(texts, ["long", "medium", "short"])).shards
    planned = [[d.id for d in documents] for documents in plan.values()]
    assert planned[:2] == [["short"], ["medium"]]
    assert len(planned) > 3 and all(ids == ["long"] for ids in planned[2:])  # its sections
    several = config.model_copy(update={"sharding": ShardingConfig(documents_per_shard=2)})
    memory = ParametricMemory.create(tmp_path / "several", several)
    plan = Ingest(memory.writer(), make_documents(texts, ["long", "medium", "short"])).shards
    assert [[d.id for d in documents] for documents in plan.values()] == [
        ["long", "medium"],
        ["short"],
    ]  # documents sharing a shard replay each other in ingest order: kept


def test_a_failing_group_commits_nothing_of_itself_and_keeps_the_groups_before(
    tmp_path, tiny_config, monkeypatch
):
    config = tiny_config.model_copy(
        update={"sharding": ShardingConfig(documents_per_shard=1, shards_in_parallel=2)}
    )
    memory = ParametricMemory.create(tmp_path / "mem", config)
    real = ingest_module.transform_fresh_documents
    calls = []

    def fails_the_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("crash during consolidation")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "transform_fresh_documents", fails_the_second_time)
    plan = Ingest(memory.writer(), make_documents(TEXTS[:4], IDS[:4])).shards
    planned = [document.id for documents in plan.values() for document in documents]
    with pytest.raises(RuntimeError, match="crash"):
        memory.add_documents(TEXTS[:4], ids=IDS[:4], progress=False)
    assert sorted(ParametricMemory.open(memory.root).documents) == sorted(planned[:2])
    assert verify_memory(memory.root) == []
    leftovers = [p.name for p in memory.root.iterdir() if p.name.startswith(".incoming-")]
    assert leftovers == []


def test_passes_take_a_steps_rows_longest_first_until_the_budget_runs_out(
    model_dir,  # noqa: F811
    monkeypatch,
):
    lm = student(model_dir)
    examples = random_examples(lm.model, 6, seed=7)
    rows = [(slot, e) for slot, e in zip((0, 0, 1, 1, 3, 3), examples, strict=True)]
    longest_first = sorted(rows, key=lambda row: len(row[1].student_ids), reverse=True)
    widths = [len(e.student_ids) for _, e in longest_first]
    monkeypatch.setattr(slot_training, "_PASS_TOKENS", 2 * widths[0])
    passes = _passes(rows, vocabulary=10)
    assert [row for rows_of_pass in passes for row in rows_of_pass] == longest_first
    assert all(len(p) * max(len(e.student_ids) for _, e in p) <= 2 * widths[0] for p in passes)
    assert len(passes[0]) == 2 and len(passes) < len(rows)
    monkeypatch.setattr(slot_training, "_PASS_LOGITS", 1)
    assert _passes(rows, vocabulary=10) == [[row] for row in longest_first]


def test_length_grouped_batches_go_short_to_long_then_back(model_dir):  # noqa: F811
    lm = student(model_dir)
    examples = random_examples(lm.model, 7, seed=9)
    config = CONFIG.model_copy(update={"length_grouped_batches": True})
    plan = training_batches(examples, config, random.Random(0))
    widths = [max(len(e.student_ids) for e in batch) for batch in plan]
    assert len(plan) == 6 and widths[:3] == sorted(widths[:3])  # 2 epochs of 3 batches
    assert widths[3:] == sorted(widths[3:], reverse=True)
    lengths = sorted(len(e.student_ids) for e in examples)
    assert sorted(len(e.student_ids) for e in plan[0]) == lengths[:3]
    assert {id(e) for batch in plan[:3] for e in batch} == {id(e) for e in examples}


def test_out_of_gpu_memory_retries_each_half_of_the_group(tmp_path, tiny_config, monkeypatch):
    config = tiny_config.model_copy(
        update={"sharding": ShardingConfig(documents_per_shard=1, shards_in_parallel=4)}
    )
    memory = ParametricMemory.create(tmp_path / "mem", config)
    real = ingest_module.transform_fresh_documents
    widths = []

    def fits_two(lm, documents, *args, **kwargs):
        widths.append(len(documents))
        if len(documents) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(lm, documents, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "transform_fresh_documents", fits_two)
    report = memory.add_documents(TEXTS[:4], ids=IDS[:4], progress=False)
    assert widths == [4, 2, 2] and report.added == IDS[:4]
    assert len({r.shard for r in memory.documents.values()}) == 4
    assert verify_memory(memory.root) == []


@pytest.mark.parametrize(
    "set_by_user, expected",
    [
        ({}, "expandable_segments:True"),
        ({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}, "max_split_size_mb:64"),
        ({"PYTORCH_ALLOC_CONF": "expandable_segments:False"}, None),
    ],
)
def test_the_command_prefers_expandable_segments_unless_the_user_chose(
    monkeypatch, set_by_user, expected
):
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    for name, value in set_by_user.items():
        monkeypatch.setenv(name, value)
    prefer_expandable_segments()
    assert os.environ.get("PYTORCH_CUDA_ALLOC_CONF") == expected


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("keep_ratio", [1.0, 0.5])
def test_perplexity_gaps_are_computed_only_when_they_decide_the_selection(
    tmp_path, tiny_config, monkeypatch, width, keep_ratio
):
    passes = []
    real = transformation.student_nll
    monkeypatch.setattr(transformation, "student_nll", lambda *a: passes.append(1) or real(*a))
    config = tiny_config.model_copy(
        update={
            "selection": SelectionConfig(keep_ratio=keep_ratio),
            "sharding": ShardingConfig(documents_per_shard=1, shards_in_parallel=width),
        }
    )
    memory = ParametricMemory.create(tmp_path / "mem", config)
    memory.add_documents(TEXTS[:2], ids=IDS[:2], progress=False)
    gaps = [json.loads(line)["perplexity_gap"] for line in _records(memory, "transfer_set.jsonl")]
    assert gaps
    if keep_ratio == 1.0:
        assert not passes and all(gap is None for gap in gaps)
    else:
        assert passes and all(isinstance(gap, float) for gap in gaps)
