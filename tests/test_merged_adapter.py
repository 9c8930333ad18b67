"""Answering with the adapter merged computes what the LoRA branch computes, and leaves the
base weights exactly as they were, whatever happens inside."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_consolidate import CUDA
from test_fast_generation import load, model_dir  # noqa: F401
from test_memory import DOCS

from parametric_memory import ParametricMemory
from parametric_memory.engine.merged_adapter import (
    answering_weights,
    merged_adapter,
)
from parametric_memory.engine.models import LoadedModel


def always_merged(model, merge):
    return merged_adapter(model)


IDS = torch.tensor([[5, 17, 99, 3, 42, 7, 250, 11]])


def student(model_dir, dtype=torch.float32):  # noqa: F811
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(load(model_dir, "cpu", dtype), lora)
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter: B is no longer zero
            torch.nn.init.normal_(parameter, std=0.05)
    return model.eval()


def base_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_merged_logits_match_the_lora_branch_and_weights_come_back_bit_for_bit(model_dir):  # noqa: F811
    model = student(model_dir)
    before = base_weights(model)
    expected = model(input_ids=IDS).logits
    with merged_adapter(model):
        merged = model(input_ids=IDS).logits
        changed = base_weights(model)
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(changed[n], before[n]) for n in before)  # it did merge
    after = base_weights(model)
    assert all(torch.equal(after[n], before[n]) for n in before)
    torch.testing.assert_close(model(input_ids=IDS).logits, expected, rtol=0, atol=0)


def test_bfloat16_merge_rounds_once_and_restores_exactly(model_dir):  # noqa: F811
    model = student(model_dir, torch.bfloat16)
    before = base_weights(model)
    expected = model(input_ids=IDS).logits.float()
    with merged_adapter(model):
        merged = model(input_ids=IDS).logits.float()
    torch.testing.assert_close(merged, expected, rtol=0.05, atol=0.05)
    assert all(torch.equal(base_weights(model)[n], before[n]) for n in before)


def test_an_error_inside_still_restores_the_base_weights(model_dir):  # noqa: F811
    model = student(model_dir)
    before = base_weights(model)
    with pytest.raises(RuntimeError, match="inside"), merged_adapter(model):
        raise RuntimeError("inside")
    assert all(torch.equal(base_weights(model)[n], before[n]) for n in before)
    assert not any(m.disable_adapters for m in model.modules() if hasattr(m, "lora_A"))


@pytest.mark.parametrize("how", ["adapter off", "switch", "training", "no adapter"])
def test_nothing_is_merged_where_it_does_not_apply(model_dir, how, monkeypatch):  # noqa: F811
    model = student(model_dir) if how != "no adapter" else load(model_dir)
    before = base_weights(model)
    if how == "training":
        model.train()
    context = model.disable_adapter() if how == "adapter off" else torch.no_grad()
    merging = answering_weights(model, merge=how != "switch")
    with context, merging:
        inside = base_weights(model)
    assert all(torch.equal(inside[n], before[n]) for n in before)


def test_a_cpu_model_answers_through_the_lora_branch(model_dir):  # noqa: F811
    model = student(model_dir)
    before = base_weights(model)
    with answering_weights(model, LoadedModel(model, None, "tiny", "x").backend.merged_answers):
        inside = base_weights(model)
    assert all(torch.equal(inside[n], before[n]) for n in before)


def test_a_memory_answers_the_same_merged_or_not(tmp_path, tiny_config, monkeypatch):
    memory = ParametricMemory.create(tmp_path / "mem", tiny_config)
    memory.add_documents(DOCS, ids=["a", "b"], progress=False)
    questions = ["How many vacation days?", "When is the Zorbian festival?", "Where?"]
    # one question a call: a row with its own adapter, as questions of several shards share
    # a batch; a shard with a batch's worth of questions gets its update merged on CUDA
    alone = [memory.ask(question, max_new_tokens=8) for question in questions]
    merges = []

    def merging(model, merge):  # what CUDA does
        merges.append(model)
        return merged_adapter(model)

    monkeypatch.setattr("parametric_memory.memory.answering_weights", merging)
    assert [memory.ask(question, max_new_tokens=8) for question in questions] == alone
    assert not merges
    many = memory.ask_batch([q for q in questions for _ in range(16)], max_new_tokens=8)
    assert many == [a for a in alone for _ in range(16)]
    assert len(merges) == 2  # one merge a shard


@CUDA
def test_on_cuda_the_engine_answers_with_merged_weights(model_dir):  # noqa: F811
    model = student(model_dir).to("cuda", torch.bfloat16)
    before = base_weights(model)
    ids = IDS.to("cuda")
    expected = model(input_ids=ids).logits.float()
    with answering_weights(model, LoadedModel(model, None, "tiny", "x").backend.merged_answers):
        inside = base_weights(model)
        merged = model(input_ids=ids).logits.float()
    assert any(not torch.equal(inside[n], before[n]) for n in before)
    torch.testing.assert_close(merged, expected, rtol=0.05, atol=0.05)
    assert all(torch.equal(base_weights(model)[n], before[n]) for n in before)


def test_threads_sharing_a_memory_get_the_answers_of_serial_calls(
    tmp_path, tiny_config, monkeypatch
):
    memory = ParametricMemory.create(tmp_path / "mem", tiny_config)
    memory.add_documents(DOCS, ids=["a", "b"], progress=False)
    monkeypatch.setattr("parametric_memory.memory.answering_weights", always_merged)
    questions = ["How many vacation days?", "When is the Zorbian festival?"] * 4
    serial = [memory.ask(q, max_new_tokens=6) for q in questions]
    before = base_weights(memory.model.model)
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda q: memory.ask(q, max_new_tokens=6), questions))
    assert threaded == serial
    after = base_weights(memory.model.model)
    assert all(torch.equal(after[n], before[n]) for n in before)


def test_a_merged_stream_matches_ask_and_leaving_it_early_restores_everything(
    tmp_path, tiny_config, monkeypatch
):
    memory = ParametricMemory.create(tmp_path / "mem", tiny_config)
    memory.add_documents(DOCS[:1], ids=["a"], progress=False)
    monkeypatch.setattr("parametric_memory.memory.answering_weights", always_merged)
    question = "Where is the office?"
    streamed = "".join(memory.stream(question, max_new_tokens=6)).strip()
    assert streamed == memory.ask(question, max_new_tokens=6)
    before = base_weights(memory.model.model)
    pieces = memory.stream(question, max_new_tokens=6)
    next(pieces, None)
    pieces.close()
    assert all(torch.equal(base_weights(memory.model.model)[n], before[n]) for n in before)

    def take_the_model() -> bool:
        if not memory._model_lock.acquire(blocking=False):
            return False
        memory._model_lock.release()
        return True

    with ThreadPoolExecutor(max_workers=1) as pool:  # another thread can take the model
        assert pool.submit(take_the_model).result()
