"""Compaction: level-0 documents regrouped by relatedness and consolidated jointly into
shared shards, committed atomically; what the memory holds, answers, forgets and re-adds
stays right across it."""

from __future__ import annotations

import json

import pytest

from parametric_memory import CompactionConfig, MemoryConfig, ParametricMemory, store
from parametric_memory.grouping import group_related
from parametric_memory.store.verify import verify_memory

TOPICS = {
    "kelp": "Marrow Bay harvests violet kelp each October with copper rakes and kelp boats.",
    "kelp-2": "Kelp farmers of Marrow Bay dry the violet kelp on copper racks by the harbour.",
    "kelp-3": "The kelp boats of Marrow Bay leave before dawn to cut the violet kelp beds.",
    "festival": "The Zorbian lantern festival is held every May 14 in the village of Orsk.",
    "festival-2": "Lanterns at the Zorbian festival in Orsk are painted violet by villagers.",
    "festival-3": "The Zorbian festival of Orsk was founded in 1871 by a lantern maker.",
}


def test_related_documents_share_a_group():
    groups = group_related(TOPICS, size=3)
    assert sorted(sorted(group) for group in groups) == [
        ["festival", "festival-2", "festival-3"],
        ["kelp", "kelp-2", "kelp-3"],
    ]


def test_groups_have_the_asked_size_and_hold_every_document_once():
    texts = {f"d{i}": f"document {i} about topic {i % 5} word{i % 3}" for i in range(23)}
    groups = group_related(texts, size=4)
    assert [len(group) for group in groups] == [4, 4, 4, 4, 4, 3]
    assert sorted(doc for group in groups for doc in group) == sorted(texts)
    assert group_related(texts, size=4) == groups  # deterministic


def test_documents_without_indexable_words_are_still_grouped():
    texts = {"a": "To be or not to be.", "b": "1 2 3", "c": "kelp kelp", "d": "kelp rakes"}
    groups = group_related(texts, size=2)
    assert sorted(doc for group in groups for doc in group) == ["a", "b", "c", "d"]
    assert ["c", "d"] in [sorted(group) for group in groups]


def _config(tiny_config: MemoryConfig, **compaction) -> MemoryConfig:
    settings = {"documents_per_shard": 3, "auto_after": None, **compaction}
    return tiny_config.model_copy(update={"compaction": CompactionConfig(**settings)})


def _filled(tmp_path, tiny_config: MemoryConfig, **compaction) -> ParametricMemory:
    memory = ParametricMemory.create(tmp_path / "mem", _config(tiny_config, **compaction))
    memory.add_documents(list(TOPICS.values()), ids=list(TOPICS), progress=False)
    return memory


def test_compaction_replaces_level_zero_shards_with_one_shard_per_group(tmp_path, tiny_config):
    memory = _filled(tmp_path, tiny_config)
    before = memory.documents
    assert len({record.shard for record in before.values()}) == 6
    report = memory.compact(progress=False)
    assert (report.shards_before, report.shards_after) == (6, 2)
    after = memory.documents
    shard_of = {doc: record.shard for doc, record in after.items()}
    assert len({shard_of["kelp"], shard_of["kelp-2"], shard_of["kelp-3"]}) == 1
    assert shard_of["kelp"] != shard_of["festival"]
    manifest = store.read_manifest(memory.root)
    assert sorted(manifest.compacted_shards) == sorted(set(shard_of.values()))
    assert all(after[doc].content_hash == before[doc].content_hash for doc in TOPICS)
    assert verify_memory(memory.root) == []
    state = memory.root / manifest.state / store.SHARDS_DIR
    assert sorted(int(p.name) for p in state.iterdir()) == sorted(set(shard_of.values()))
    assert memory.info().shards == 2
    assert memory.ask("When is the Zorbian festival?", max_new_tokens=4)


def test_the_command_line_compacts_and_the_memory_reopens_compacted(tmp_path, tiny_config, capsys):
    from parametric_memory.cli import main

    root = _filled(tmp_path, tiny_config, documents_per_shard=5).root
    assert main(["compact", "--memory", str(root), "--documents-per-shard", "2"]) == 0
    assert "compacted 6 document(s) into 3 shard(s); 6 -> 3 shards" in capsys.readouterr().out
    memory = ParametricMemory.open(root)
    assert memory.info().shards == 3
    questions = ["What do kelp boats cut?", "Who founded the Zorbian festival?"]
    answers = memory.ask_batch(questions, max_new_tokens=6)
    assert ParametricMemory.open(root).ask_batch(questions, max_new_tokens=6) == answers


def test_new_documents_after_compaction_open_a_level_zero_shard(tmp_path, tiny_config):
    memory = _filled(tmp_path, tiny_config)
    memory.compact(progress=False)
    compacted = set(store.read_manifest(memory.root).compacted_shards)
    report = memory.add_documents(list(TOPICS.values()), ids=list(TOPICS), progress=False)
    assert report.skipped == list(TOPICS) and not report.added  # re-adding is a no-op
    memory.add_documents(["Copper rakes are sold in Quillhaven."], ids=["rakes"], progress=False)
    assert memory.documents["rakes"].shard not in compacted
    assert memory.compact(progress=False).groups == []  # one level-0 document: nothing to do


def test_forgetting_a_compacted_document_retrains_its_shard_without_it(tmp_path, tiny_config):
    memory = _filled(tmp_path, tiny_config)
    memory.compact(progress=False)
    shard = memory.documents["kelp-2"].shard
    memory.delete_document("kelp-2", progress=False)
    assert "kelp-2" not in memory.documents
    assert memory.documents["kelp"].shard == shard
    assert verify_memory(memory.root) == []
    for path in (memory.root / store.read_manifest(memory.root).state).rglob("*.jsonl"):
        assert "dry the violet kelp" not in path.read_text()


def test_compaction_sets_itself_off_once_level_zero_reaches_the_threshold(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "mem", _config(tiny_config, auto_after=6))
    first = memory.add_documents(list(TOPICS.values())[:4], ids=list(TOPICS)[:4], progress=False)
    assert first.compaction is None
    rest = memory.add_documents(list(TOPICS.values())[4:], ids=list(TOPICS)[4:], progress=False)
    assert rest.compaction is not None and rest.compaction.shards_after == 2
    assert len(store.read_manifest(memory.root).compacted_shards) == 2


def test_a_manifest_from_before_compaction_opens_with_no_compacted_shards(tmp_path, tiny_config):
    memory = _filled(tmp_path, tiny_config)
    path = memory.root / store.MANIFEST_FILE
    raw = json.loads(path.read_text())
    del raw["compacted_shards"]
    path.write_text(json.dumps(raw))
    assert store.read_manifest(memory.root).compacted_shards == []
    assert ParametricMemory.open(memory.root).compact(progress=False).shards_after == 2


@pytest.mark.parametrize("value", [0, 1, -3])
def test_a_compacted_shard_holds_at_least_two_documents(value):
    with pytest.raises(ValueError, match="documents_per_shard"):
        CompactionConfig(documents_per_shard=value)


def _shard_weights(memory: ParametricMemory) -> dict[int, dict]:
    from safetensors.torch import load_file

    manifest = store.read_manifest(memory.root)
    return {
        shard: load_file(store.shard_weights(memory.root, manifest, shard))
        for shard in manifest.compacted_shards
    }


def test_groups_trained_together_in_slots_match_groups_trained_one_by_one(
    tmp_path, tiny_config, monkeypatch
):
    """The CUDA backend trains a batch of groups in stacked slots; the reference trains them
    in turn. Forced on the CPU here, both give each group the same adapter."""
    import dataclasses

    config = tiny_config.model_copy(
        update={"compaction": CompactionConfig(documents_per_shard=3, auto_after=None)}
    )
    weights = []
    for together in (1, 4):
        memory = ParametricMemory.create(tmp_path / f"mem-{together}", config)
        memory.add_documents(list(TOPICS.values()), ids=list(TOPICS), progress=False)
        lm = memory.model
        monkeypatch.setattr(
            lm, "backend", dataclasses.replace(lm.backend, documents_together=together)
        )
        memory.compact(progress=False)
        weights.append(_shard_weights(memory))
    one_by_one, in_slots = weights
    assert one_by_one.keys() == in_slots.keys() and len(one_by_one) == 2
    for shard, tensors in one_by_one.items():
        trained = [key for key in tensors if "lora_B" in key]
        assert trained and all(tensors[key].abs().max() > 0 for key in trained)
        for key, tensor in tensors.items():
            error = (in_slots[shard][key] - tensor).norm() / tensor.norm()
            assert error < 1e-3, (shard, key, float(error))


def _stored_in(config: MemoryConfig, dtype: str) -> MemoryConfig:
    stored = config.consolidation.model_copy(update={"adapter_dtype": dtype})
    return config.model_copy(update={"consolidation": stored})


def test_shards_stored_in_bfloat16_take_half_the_bytes_and_answer(tmp_path, tiny_config):
    import torch

    halved = _filled(tmp_path / "bf16", _stored_in(tiny_config, "bfloat16"))
    full = _filled(tmp_path / "fp32", _stored_in(tiny_config, "float32"))
    # half the tensor bytes; the tiny model's files are ~15% header (the tensors' names)
    assert halved.info().adapter_bytes < 0.6 * full.info().adapter_bytes
    halved.compact(progress=False)
    assert verify_memory(halved.root) == []
    for tensors in _shard_weights(halved).values():
        assert {tensor.dtype for tensor in tensors.values()} == {torch.bfloat16}
    reopened = ParametricMemory.open(halved.root)
    assert reopened.ask("Who founded the Zorbian festival?", max_new_tokens=4)


def test_compaction_can_store_its_shards_in_bfloat16_while_level_zero_stays_float32(
    tmp_path, tiny_config
):
    import torch

    memory = _filled(tmp_path / "m", _stored_in(tiny_config, "float32"))
    memory.compact(
        CompactionConfig(documents_per_shard=3, adapter_dtype="bfloat16"), progress=False
    )
    for tensors in _shard_weights(memory).values():
        assert {tensor.dtype for tensor in tensors.values()} == {torch.bfloat16}
    memory.add_documents(["The Tarrow Bridge spans 412 metres over the Kessel River."])
    manifest = store.read_manifest(memory.root)
    newest = max(record.shard for record in manifest.documents.values())
    assert newest not in manifest.compacted_shards
    level0 = store.shard_weights(memory.root, manifest, newest)
    from safetensors.torch import load_file

    assert {tensor.dtype for tensor in load_file(level0).values()} == {torch.float32}


def test_a_reader_opened_before_a_compaction_follows_it(tmp_path, tiny_config):
    """Another process's commit retires the state a reader read; the reader picks up the
    new one instead of failing on files that are gone."""
    writer = _filled(tmp_path, tiny_config)
    reader = ParametricMemory.open(writer.root)
    questions = ["What do kelp boats cut?", "Who founded the Zorbian festival?"]
    reader.ask_batch(questions, max_new_tokens=4)
    old_state = store.read_manifest(writer.root).state
    writer.compact(progress=False)
    assert not (writer.root / old_state).exists()
    assert reader.ask_batch(questions, max_new_tokens=4)
    assert "".join(reader.stream(questions[0], max_new_tokens=4)) is not None
    assert reader.info().shards == 2
    assert reader.documents["kelp"].shard == writer.documents["kelp"].shard


def test_a_memory_opened_while_a_commit_retires_its_state_opens_the_new_one(
    tmp_path, tiny_config, monkeypatch
):
    """The commit lands after `open` read the manifest and before it loaded a shard."""
    from parametric_memory import memory as memory_module

    writer = _filled(tmp_path, tiny_config)
    load_model = memory_module.load_model

    def load_during_a_commit(config, **options):
        writer.compact(progress=False)
        return load_model(config, **options)

    monkeypatch.setattr(memory_module, "load_model", load_during_a_commit)
    reader = ParametricMemory.open(writer.root)
    assert reader.info().shards == 2
    assert reader.ask("When is the Zorbian festival?", max_new_tokens=4)


def test_compaction_draws_no_frames_when_stderr_is_not_a_terminal(tmp_path, tiny_config, capsys):
    memory = _filled(tmp_path, tiny_config)
    capsys.readouterr()
    memory.compact(progress=True)
    assert "\r" not in capsys.readouterr().err
