"""The benchmarks' scoring (SQuAD normalisation, containment, token F1, bootstrap interval),
BM25 ranking, data loading and passage sampling: pure functions, no model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from common import load_documents  # noqa: E402
from metrics import (  # noqa: E402
    bootstrap_ci,
    contains_answer,
    estimate,
    normalise,
    score_answer,
    token_f1,
)
from quality import sample_documents  # noqa: E402
from retrieval import rank_passages  # noqa: E402


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  a cat,   an owl and THE dog. ", "cat owl and dog"),
        ("Santa Clara, California", "santa clara california"),
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ('"golden anniversary"', "golden anniversary"),
        ("", ""),
    ],
)
def test_squad_normalisation(text, expected):
    assert normalise(text) == expected


def test_contains_answer_after_normalisation():
    assert contains_answer("It was the Denver Broncos, in 2016.", "Denver Broncos") == 1.0
    assert contains_answer("denver", "Denver Broncos") == 0.0
    assert contains_answer("anything", "The") == 0.0  # a gold that normalises to nothing


def test_token_f1_matches_squad():
    assert token_f1("Denver Broncos", "the Denver Broncos") == 1.0
    assert token_f1("Carolina", "Denver Broncos") == 0.0
    assert token_f1("", "Denver Broncos") == 0.0
    # 1 shared token: precision 1/3, recall 1/2 -> F1 0.4
    assert token_f1("the Denver team won", "Denver Broncos") == pytest.approx(0.4)
    # repeated tokens count at most as often as in the gold
    assert token_f1("gold gold", "gold") == pytest.approx(2 / 3)


def test_score_answer_gives_both_metrics():
    assert score_answer("February 7, 2016", "February 7, 2016") == {"contains": 1.0, "f1": 1.0}


def test_bootstrap_interval_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci(values)
    assert 0.15 < low < 0.3 < high < 0.45
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
    assert estimate(values) == {"mean": 0.3, "ci95": [round(low, 4), round(high, 4)]}


def test_bm25_ranks_the_matching_passage_first():
    passages = [
        "The cat sat on the mat in the kitchen.",
        "Super Bowl 50 was won by the Denver Broncos at Levi's Stadium.",
        "Dogs bark at night when the moon is full.",
    ]
    ranked = rank_passages(passages, ["Who won Super Bowl 50?", "When do dogs bark?"], k=2)
    assert [top[0] for top in ranked] == [1, 2]
    assert all(len(top) == 2 and len(set(top)) == 2 for top in ranked)


def test_bm25_k_is_capped_and_ties_keep_passage_order():
    ranked = rank_passages(["alpha beta", "gamma delta"], ["zeta", "the"], k=5)
    assert ranked == [[0, 1], [0, 1]]


def test_load_documents_reads_both_layouts(tmp_path):
    squad = {
        "id": "squad-val-0",
        "title": "T",
        "context": "Passage.",
        "questions": [{"question": "Q?", "answer": "A"}],
    }
    invented = {
        "id": "x",
        "title": "X",
        "text": "Text.",
        "questions": [{"question": "Q2?", "answer": "B"}],
    }
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(squad) + "\n\n" + json.dumps(invented) + "\n")
    documents = load_documents(path)
    assert [d["text"] for d in documents] == ["Passage.", "Text."]
    assert documents[1]["questions"] == [{"question": "Q2?", "answer": "B"}]
    path.write_text(json.dumps({"id": "y", "questions": []}) + "\n")
    with pytest.raises(ValueError, match=r"mixed\.jsonl:1"):
        load_documents(path)


def test_passage_samples_are_seeded_prefixes():
    documents = [
        {"id": str(i), "questions": [{"question": "q", "answer": "a"}] * 7} for i in range(50)
    ]
    small, large = sample_documents(documents, 5, 3, 2), sample_documents(documents, 20, 3, 0)
    assert [d["id"] for d in small] == [d["id"] for d in large[:5]]
    assert [d["id"] for d in small] != [d["id"] for d in sample_documents(documents, 5, 4, 2)]
    assert len(small[0]["questions"]) == 2 and len(large[0]["questions"]) == 7
