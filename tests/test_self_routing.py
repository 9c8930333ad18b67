"""Self-routing: each of the router's top shards answers a question alone, with the model's
confidence in its answer (`ParametricMemory.answer_candidates`), and `selection="confidence"`
keeps the answer the model is surest of. Also: questions of many shards answered in shared
batches, each row with its own shard, as each shard alone answers them."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from parametric_memory import (
    Candidate,
    InvalidArgumentError,
    MemoryConfig,
    ParametricMemory,
    RoutingConfig,
    cli,
    store,
)
from parametric_memory.engine.generation import answer_confidence, encode_prompts, generate_scored
from parametric_memory.engine.row_adapters import AdapterBank, RowChoices

FACTS = {
    "lanterns": "The Quillhaven lantern festival is held every May 14 on the harbour wall.",
    "payroll": "Payroll at Brindlewick is run by Odo Brask from the Orsk Hollow office.",
    "kelp": "Marrow Bay harvests violet kelp each October with copper rakes.",
}
QUESTIONS = [
    "When is the Quillhaven lantern festival?",
    "Who runs payroll at Brindlewick?",
    "When does Marrow Bay harvest violet kelp?",
]


@pytest.fixture
def memory(tmp_path, tiny_config) -> ParametricMemory:
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    memory.add_documents(list(FACTS.values()), ids=list(FACTS), progress=False)
    return memory


def test_answer_confidence_averages_up_to_and_with_the_first_end_token():
    logprobs = torch.tensor([-1.0, -3.0, -0.5, -9.0, -9.0])
    assert answer_confidence(logprobs, torch.tensor([5, 6, 2, 2, 2]), eos=2) == pytest.approx(-1.5)
    assert answer_confidence(logprobs, torch.tensor([5, 6, 7, 8, 9]), eos=2) == pytest.approx(-4.5)


def test_a_one_token_answer_has_the_log_probability_of_the_greedy_token_with_and_without_its_shard(
    memory,
):
    lm = memory.model
    shard = memory.documents["payroll"].shard
    manifest = store.read_manifest(memory.root)
    state = load_file(store.shard_weights(memory.root, manifest, shard))
    rows = RowChoices(AdapterBank(lm.model, lambda _: state, 1 << 24), [[("payroll", 1.0)]])
    [(_, confidence, base_confidence)] = generate_scored(lm, [QUESTIONS[1]], 1, 4, rows)
    ids = torch.tensor(encode_prompts(lm.tokenizer, [QUESTIONS[1]]), device=lm.device)
    with rows.attached([0]), torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0, -1].float()
    with lm.model.disable_adapter(), torch.no_grad():
        base = lm.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
    assert confidence == pytest.approx(float(logits.log_softmax(-1).max()), abs=1e-4)
    assert base_confidence == pytest.approx(float(base[logits.argmax()]), abs=1e-4)


def test_each_question_gets_its_top_shards_answers_best_routed_first(memory):
    answered = memory.answer_candidates(QUESTIONS, candidates=2, max_new_tokens=5)
    assert len(answered) == 3
    for question, document in zip(answered, FACTS, strict=True):
        assert 1 <= len(question) <= 2 and all(isinstance(c, Candidate) for c in question)
        assert question[0].document_ids == [document]
        assert question[0].shard == memory.documents[document].shard
        assert [c.router_score for c in question] == sorted(
            (c.router_score for c in question), reverse=True
        )
        assert all(c.confidence <= 0 for c in question)
    routed = memory.ask_batch(QUESTIONS, max_new_tokens=5)  # the router's pick alone
    assert [question[0].answer for question in answered] == routed


def test_confidence_selection_keeps_the_surest_candidates_answer(memory):
    answered = memory.answer_candidates(QUESTIONS, candidates=3, max_new_tokens=5)
    surest = [max(q, key=lambda c: c.confidence).answer for q in answered]
    assert memory.ask_batch(QUESTIONS, max_new_tokens=5, selection="confidence") == surest
    streamed = "".join(memory.stream(QUESTIONS[0], max_new_tokens=5, selection="confidence"))
    assert streamed == surest[0]


def test_a_self_routed_memory_chooses_by_confidence_by_default(tmp_path, tiny_config):
    routing = {"selection": "confidence", "candidates": 2}
    config = tiny_config.model_copy(
        update={"routing": tiny_config.routing.model_copy(update=routing)}
    )
    memory = ParametricMemory.create(tmp_path / "m", config)
    memory.add_documents(list(FACTS.values()), ids=list(FACTS), progress=False)
    reopened = ParametricMemory.open(memory.root)
    answered = reopened.answer_candidates(QUESTIONS, max_new_tokens=4)
    assert all(len(q) <= 2 for q in answered)
    surest = [max(q, key=lambda c: c.confidence).answer for q in answered]
    assert reopened.ask_batch(QUESTIONS, max_new_tokens=4) == surest
    # asking for several shards routes by the router
    assert len(reopened.ask_batch(QUESTIONS, max_new_tokens=4, shards_per_question=2)) == 3


def test_bad_selection_and_candidates_are_refused_in_one_line(memory):
    with pytest.raises(InvalidArgumentError, match="selection"):
        memory.ask("When?", selection="best")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="one shard"):
        memory.ask("When?", selection="confidence", shards_per_question=2)
    with pytest.raises(InvalidArgumentError, match="candidates"):
        memory.answer_candidates(["When?"], candidates=0)
    with pytest.raises(InvalidArgumentError, match="list of strings"):
        memory.answer_candidates("When?")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MemoryConfig(routing={"selection": "confidence", "shards_per_question": 2})


def test_questions_of_many_shards_share_batches_and_answer_as_each_shard_alone(memory):
    together = memory.ask_batch(QUESTIONS, max_new_tokens=6)
    alone = [memory.ask(question, max_new_tokens=6) for question in QUESTIONS]
    assert together == alone


def test_open_routes_this_process_as_asked_and_saves_nothing(memory):
    routing = RoutingConfig(selection="confidence", candidates=2)
    reopened = ParametricMemory.open(memory.root, routing=routing)
    assert reopened.config.routing == routing
    answered = reopened.answer_candidates(QUESTIONS, max_new_tokens=4)
    assert all(len(q) <= 2 for q in answered)
    surest = [max(q, key=lambda c: c.confidence).answer for q in answered]
    assert reopened.ask_batch(QUESTIONS, max_new_tokens=4) == surest
    assert store.read_manifest(memory.root).config.routing == RoutingConfig()
    assert ParametricMemory.open(memory.root).config.routing == RoutingConfig()


def test_the_command_line_asks_with_the_routing_given(memory, capsys):
    surest = memory.ask(QUESTIONS[0], max_new_tokens=5, selection="confidence")
    argv = ["ask", QUESTIONS[0], "--memory", str(memory.root), "--max-new-tokens", "5"]
    assert cli.main([*argv, "--selection", "confidence"]) == 0
    assert capsys.readouterr().out.strip() == surest
    composed = memory.ask(QUESTIONS[0], max_new_tokens=5, shards_per_question=2)
    assert cli.main([*argv, "--shards-per-question", "2"]) == 0
    assert capsys.readouterr().out.strip() == composed
    assert cli.main([*argv, "--shards-per-question", "0"]) == 1
    assert "shards_per_question" in capsys.readouterr().err
