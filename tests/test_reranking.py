"""Re-ranking the router's candidates with the base model: the question's likelihood after each
candidate's chunk (`engine/likelihood.py`, `reranking.py`, `RoutingConfig.rerank`)."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from parametric_memory import InvalidArgumentError, MemoryConfig, ParametricMemory, reranking
from parametric_memory.engine.generation import encode_texts
from parametric_memory.engine.likelihood import continuation_log_likelihoods
from parametric_memory.method.prompts import question_likelihood_pair
from parametric_memory.reranking import (
    bm25_is_clear,
    question_likelihoods,
    question_window,
    rerank_score,
    reranked,
)
from parametric_memory.routing import RankedShard

PAIRS = [
    ("Passage: The Quillhaven lantern festival is held every May 14.\nQuestion:", " When?"),
    ("Short:", " Who runs payroll at Brindlewick from the Orsk Hollow office?"),
    ("Passage: New hires get 27 vacation days.\nQuestion:", " How many vacation days?"),
]


@pytest.fixture
def lm(tmp_path, tiny_config):
    return ParametricMemory.create(tmp_path / "m", tiny_config).model


def direct_mean(lm, context: str, continuation: str) -> float:
    """The continuation's mean log-probability from one unpadded forward pass of the base."""
    head, tail = encode_texts(lm.tokenizer, [context, continuation])
    ids = torch.tensor([head + tail], device=lm.device)
    with lm.model.disable_adapter(), torch.no_grad():
        log_probs = lm.model(input_ids=ids).logits[0].float().log_softmax(-1)
    predicted = log_probs[len(head) - 1 : -1]
    return float(predicted.gather(-1, ids[0, len(head) :, None]).mean())


def test_a_continuations_likelihood_is_its_mean_log_probability_alone_or_padded_in_a_batch(lm):
    together = continuation_log_likelihoods(lm, PAIRS, batch_size=3)
    one_by_one = [continuation_log_likelihoods(lm, [pair], batch_size=1)[0] for pair in PAIRS]
    direct = [direct_mean(lm, *pair) for pair in PAIRS]
    assert together == pytest.approx(direct, abs=1e-4)
    assert one_by_one == pytest.approx(direct, abs=1e-4)
    assert len(set(together)) == 3 and all(score < 0 for score in together)


def test_the_likelihood_is_the_base_models_whatever_adapter_is_loaded(lm):
    before = continuation_log_likelihoods(lm, PAIRS, batch_size=2)
    generator = torch.Generator().manual_seed(1)
    state = get_peft_model_state_dict(lm.model)
    set_peft_model_state_dict(
        lm.model, {k: torch.randn(t.shape, generator=generator) for k, t in state.items()}
    )
    with torch.no_grad():
        ids = torch.tensor([encode_texts(lm.tokenizer, ["Short: Who?"])[0]], device=lm.device)
        with lm.model.disable_adapter():
            base = lm.model(input_ids=ids).logits
        assert not torch.allclose(lm.model(input_ids=ids).logits, base)  # the adapter acts
    assert continuation_log_likelihoods(lm, PAIRS, batch_size=2) == pytest.approx(before, abs=1e-5)


def test_an_empty_continuation_is_refused(lm):
    with pytest.raises(ValueError, match="at least one token"):
        continuation_log_likelihoods(lm, [("Passage:", "")], batch_size=1)
    assert continuation_log_likelihoods(lm, [], batch_size=4) == []


def test_candidates_are_ordered_by_likelihood_plus_weighted_bm25(lm):
    question = "When is the lantern festival held?"
    row = [
        RankedShard(4, 9.0, "New hires get 27 vacation days."),
        RankedShard(7, 6.0, "The Quillhaven lantern festival is held every May 14."),
        RankedShard(2, 3.0, "Payroll is run by Odo Brask."),
    ]
    likelihoods = continuation_log_likelihoods(
        lm, [question_likelihood_pair(c.chunk, question) for c in row], batch_size=3
    )
    for weight in (0.0, 1.0):
        expected = sorted(
            row,
            key=lambda c: -rerank_score(likelihoods[row.index(c)], c.score, 9.0, weight),
        )
        [ordered] = reranked(lm, [question], [row], weight)
        assert ordered == [(c.shard, c.score) for c in expected]
    # BM25 decides where its weight dwarfs the model's differences
    assert reranked(lm, [question], [row], 100.0) == [[(4, 9.0), (7, 6.0), (2, 3.0)]]


def test_a_question_whose_bm25_first_is_clear_keeps_bm25s_order_unread(lm):
    question = "When is the lantern festival held?"
    chunks = [
        "The Quillhaven lantern festival is held every May 14.",
        "New hires get 27 vacation days.",
        "Payroll is run by Odo Brask.",
    ]
    likelihoods = continuation_log_likelihoods(
        lm, [question_likelihood_pair(chunk, question) for chunk in chunks], batch_size=3
    )
    # BM25 puts the chunk the model finds least likely first, far ahead of the others
    by_model = sorted(range(3), key=lambda i: -likelihoods[i])
    scores = dict(zip(reversed(by_model), (10.0, 1.0, 0.5), strict=True))
    row = sorted((RankedShard(i, scores[i], chunks[i]) for i in range(3)), key=lambda c: -c.score)
    bm25_order = [(c.shard, c.score) for c in row]
    model_order = [(i, scores[i]) for i in by_model]
    assert bm25_order != model_order
    assert reranked(lm, [question, question], [row, row], 0.0) == [model_order] * 2
    assert reranked(lm, [question], [row], 0.0, clear_margin=5.0) == [bm25_order]
    assert reranked(lm, [question], [row], 0.0, clear_margin=20.0) == [model_order]


def test_bm25_is_clear_compares_the_first_two_scores():
    row = [RankedShard(1, 6.0, ""), RankedShard(2, 3.0, ""), RankedShard(3, 1.0, "")]
    assert bm25_is_clear(row, 2.0)
    assert not bm25_is_clear(row, 2.5)
    assert not bm25_is_clear(row, None)
    assert not bm25_is_clear(row[:1], 2.0)  # one candidate: nothing to compare


def test_a_question_with_one_candidate_keeps_it_unscored(lm):
    only = [RankedShard(3, 0.0, "")]
    assert reranked(lm, ["Anything?"], [only], 1.0) == [[(3, 0.0)]]


def test_rerank_score_adds_bm25_relative_to_the_best_candidate():
    assert rerank_score(-2.0, 5.0, 10.0, 1.0) == pytest.approx(-1.5)
    assert rerank_score(-2.0, 10.0, 10.0, 0.5) == pytest.approx(-1.5)
    assert rerank_score(-2.0, 0.0, 0.0, 1.0) == pytest.approx(-2.0)


def test_a_memory_answers_first_from_the_shard_the_model_ranks_first(tmp_path, tiny_config):
    facts = {
        "lanterns": "The Quillhaven lantern festival is held every May 14.",
        "payroll": "Payroll at Brindlewick is run by Odo Brask from the Orsk Hollow office.",
        "bridge": "The Tarrow Bridge over the Quillhaven river opened in 1934 in Brindlewick.",
    }
    questions = ["When is the Quillhaven lantern festival?", "Who runs payroll at Brindlewick?"]
    orders = {}
    # a margin just above 1 leaves every question whose BM25 scores differ unread
    for rerank, margin in ((1, None), (3, None), (3, 1.000001)):
        routing = {"rerank": rerank, "rerank_bm25_weight": 0.0, "rerank_clear_margin": margin}
        config = MemoryConfig.model_validate({**tiny_config.model_dump(), "routing": routing})
        memory = ParametricMemory.create(tmp_path / f"m{rerank}-{margin}", config)
        memory.add_documents(list(facts.values()), ids=list(facts), progress=False)
        answered = memory.answer_candidates(questions, candidates=3, max_new_tokens=2)
        orders[rerank, margin] = [[c.document_ids[0] for c in row] for row in answered]
        routes = memory.route(questions, shards=3)  # the same order, without answering
        assert [[r.document_ids for r in row] for row in routes] == [
            [c.document_ids for c in row] for row in answered
        ]
        for question, row in zip(questions, answered, strict=True):
            scores = [c.router_score for c in row]
            if rerank == 1 or margin is not None:
                assert scores == sorted(scores, reverse=True)  # BM25's order
            else:
                pairs = [question_likelihood_pair(facts[c.document_ids[0]], question) for c in row]
                likelihoods = continuation_log_likelihoods(memory.model, pairs, batch_size=3)
                assert likelihoods == sorted(likelihoods, reverse=True)  # the model's order
    assert [row[0] for row in orders[1, None]] == ["lanterns", "payroll"]
    assert orders[3, 1.000001] == orders[1, None]


def test_a_memory_reads_no_candidate_for_a_question_bm25_routes_clearly(
    tmp_path, tiny_config, monkeypatch
):
    read: list[int] = []
    scorer = reranking.continuation_log_likelihoods

    def counted(lm, pairs, batch_size):
        read.append(len(pairs))
        return scorer(lm, pairs, batch_size)

    monkeypatch.setattr(reranking, "continuation_log_likelihoods", counted)
    texts = ["The Quillhaven lantern festival is held every May 14.", "Quillhaven has a river."]
    question = "When is the Quillhaven lantern festival held?"
    for margin, pairs in ((None, 2), (1.000001, 0)):
        routing = {"rerank": 3, "rerank_clear_margin": margin}
        config = MemoryConfig.model_validate({**tiny_config.model_dump(), "routing": routing})
        memory = ParametricMemory.create(tmp_path / f"m{margin}", config)
        memory.add_documents(texts, progress=False)
        read.clear()
        assert len(memory.route([question], shards=2)[0]) == 2
        assert sum(read) == pairs


def test_route_refuses_one_string_and_a_bad_count_in_one_line(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    with pytest.raises(InvalidArgumentError, match=r"use route\(\[question\]\) for one"):
        memory.route("When?")
    with pytest.raises(InvalidArgumentError, match="shards must be an integer from 1 to 16"):
        memory.route(["When?"], shards=0)
    assert [[r.document_ids for r in row] for row in memory.route(["When?"])] == [[[]]]


CHUNK = (
    "Orsk Hollow is a river town. Its mayor is Ada Quill. The Zorbian festival is held every "
    "May 14 in the market square. It draws 3,400 visitors. Payroll is run from Brindlewick."
)


def test_a_window_is_the_sentence_sharing_the_questions_words_then_its_neighbours():
    question = "When is the Zorbian festival held?"
    assert question_window(CHUNK, question, 12) == (
        "The Zorbian festival is held every May 14 in the market square."
    )
    assert question_window(CHUNK, question, 16) == (
        "The Zorbian festival is held every May 14 in the market square. It draws 3,400 visitors."
    )
    wider = question_window(CHUNK, question, 21)
    assert wider.startswith("Its mayor is Ada Quill. The Zorbian") and len(wider.split()) <= 21
    assert question_window(CHUNK, question, 5) == "The Zorbian festival is held"
    assert question_window(CHUNK, question, 100) == CHUNK
    assert question_window(CHUNK, "Who is the mayor?", 6) == "Its mayor is Ada Quill."


def test_the_model_reads_each_candidates_window_when_words_are_given(lm):
    question = "When is the Zorbian festival held?"
    row = [RankedShard(1, 2.0, CHUNK), RankedShard(2, 1.0, "Payroll is run from Brindlewick.")]
    windowed = question_likelihoods(lm, [question], [row], 12)
    shown = [question_window(c.chunk, question, 12) for c in row]
    pairs = [question_likelihood_pair(chunk, question) for chunk in shown]
    assert windowed == [pytest.approx(continuation_log_likelihoods(lm, pairs, 2), abs=1e-5)]
    whole = question_likelihoods(lm, [question], [row], 0)
    assert whole[0][0] != pytest.approx(windowed[0][0], abs=1e-5)
