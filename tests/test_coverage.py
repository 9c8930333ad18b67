"""benchmarks/coverage.py: the fact rules, coverage of hand-made chunks and kept items, the
asked / never-asked split of gold questions, and one run of the script on a tiny memory."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from tiny_model import FACTS

from parametric_memory import ParametricMemory
from parametric_memory.records import Chunk, TransferItem

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_script():
    """benchmarks/coverage.py under a name of its own: `coverage` is also coverage.py's."""
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("benchmark_coverage", BENCHMARKS / "coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark_coverage"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cov = _load_script()

FESTIVAL = (
    "The Zorbian lantern festival is held every year on May 14 in the village of Orsk Hollow. "
    "The festival was founded in 1871 by the glassblower Tamsin Elveroy. It draws 3,500 "
    "visitors, and 12% more buy the painted lanterns than in the 1990s."
)


def _chunk(text: str, chunk_id: str = "c0", document_id: str = "doc") -> Chunk:
    return Chunk(id=chunk_id, document_id=document_id, index=0, text=text, tokens=len(text))


def _item(answer: str, kind: str = "cloze", chunk_id: str = "c0") -> TransferItem:
    return TransferItem(chunk_id=chunk_id, kind=kind, prompt="?", answer=answer)


# --- facts ---------------------------------------------------------------------------------------
def test_facts_of_a_passage():
    found = {(f.category, f.text) for f in cov.fact_spans(FESTIVAL)}
    assert found == {
        ("name", "Zorbian"),
        ("date", "May 14"),
        ("name", "Orsk Hollow"),
        ("year", "1871"),
        ("name", "Tamsin Elveroy"),
        ("number", "3,500"),
        ("phrase", "painted lanterns"),
        ("number", "12%"),
        ("number", "1990s"),
    }
    assert cov.facts(FESTIVAL)[:3] == ["Zorbian", "May 14", "Orsk Hollow"]  # text order


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It was played on February 7, 2016, at noon.", ["February 7, 2016"]),
        ("Born 14 May 1911 in a barn.", ["14 May 1911"]),
        ("It closed in March 2003.", ["March 2003"]),
        ("The bill was $1.2 billion.", ["1.2 billion"]),
        ("Meetings start at 8:50 sharp.", ["8:50"]),
        ("The Broncos won 24–10.", ["Broncos", "24", "10"]),
        ("They went to the University of Notre Dame.", ["University of Notre Dame"]),
        ("In the Tower of London, he waited.", ["Tower of London"]),
        ("Payroll is run by Odo Brask.", ["Odo Brask"]),  # one word opens it: not a name
        ("Brindlewick Analytics hires.", ["Brindlewick Analytics"]),
        ("They met at Miami's Sun Life Stadium.", ["Miami", "Sun Life Stadium"]),
        ("They met at Levi's Stadium.", ["Levi's Stadium"]),
        ("We asked the NFL's owners.", ["NFL"]),
        (
            "It is a data consultancy in the harbour town of Bree.",
            ["data consultancy", "harbour town", "Bree"],
        ),
        ("The league emphasized the rules.", []),  # a determiner and one word: no phrase
        ("Every new employee receives a gift.", ["new employee receives"]),  # known: a verb
        ("Numbers 7 and 7 again.", ["7"]),  # one fact per normalised form
        ("", []),
    ],
)
def test_fact_rules(text, expected):
    assert cov.facts(text) == expected


def test_appears_takes_whole_words_only():
    assert cov.appears("14", "may 14 1911")
    assert not cov.appears("14", "in 2014")
    assert cov.appears("orsk hollow", "village of orsk hollow")
    assert not cov.appears("", "anything")


# --- coverage ------------------------------------------------------------------------------------
def test_coverage_of_one_chunk():
    chunk = _chunk("Mira Tallow lit the first lantern in 1911 in Quillhaven.")
    items = [
        _item("Mira Tallow", "cloze"),
        _item("She lit it in 1911, the year the Quillhaven festival began.", "recitation"),
        _item("Mira Tallow did, in 1911.", "questions"),
        _item("in 2014", "entity"),  # "1911" is not here, and "14" would not count
    ]
    (measured,) = cov.coverage([chunk], items)
    assert [f.text for f in measured.facts] == [
        "Mira Tallow",
        "first lantern",
        "1911",
        "Quillhaven",
    ]
    assert measured.covered == ["Mira Tallow", "1911", "Quillhaven"]
    assert measured.ratio == pytest.approx(3 / 4)
    assert measured.covered_by == [
        ["cloze", "questions"],
        [],
        ["questions", "recitation"],
        ["recitation"],
    ]
    kinds = cov.by_kind([measured])
    assert kinds["recitation"] == {
        "items": 1,
        "whole_chunk_copies": 0,
        "facts_covered": 2,
        "covered_alone": 1,
        "coverage_without": 0.5,
        "facts_per_item": 2.0,
    }
    assert kinds["entity"]["facts_covered"] == 0
    assert list(kinds) == ["questions", "recitation", "cloze", "entity"]  # most facts first


def test_coverage_keeps_items_to_their_own_chunk():
    chunks = [_chunk("Odo Brask runs payroll.", "a"), _chunk("Nothing here at all.", "b")]
    items = [_item("Odo Brask", chunk_id="b"), _item("Odo Brask", chunk_id="elsewhere")]
    first, second = cov.coverage(chunks, items)
    assert first.covered == [] and first.ratio == 0.0 and first.item_kinds == []
    assert second.facts == [] and second.ratio is None and second.item_kinds == ["cloze"]


def test_a_recitation_copy_covers_everything_and_is_flagged():
    chunk = _chunk("Odo Brask runs payroll from the Orsk Hollow office.")
    items = [_item(chunk.text, "recitation"), _item("Odo Brask", "cloze")]
    (measured,) = cov.coverage([chunk], items)
    assert measured.ratio == 1.0 and measured.copies == ["recitation"]
    kinds = cov.by_kind([measured])
    assert kinds["recitation"]["whole_chunk_copies"] == 1
    assert kinds["recitation"]["coverage_without"] == pytest.approx(1 / 2)  # Odo Brask only
    assert kinds["cloze"]["coverage_without"] == 1.0


def test_summary_counts_and_categories():
    chunks = [_chunk(FESTIVAL, "a"), _chunk("no facts here", "b")]
    items = [_item("On May 14, in Orsk Hollow.", "continuation", "a")]
    summary = cov.summarise(cov.coverage(chunks, items))
    assert summary["chunks"] == 2 and summary["chunks_with_facts"] == 1
    assert summary["kept_items"] == 1
    assert summary["facts"] == 9 and summary["covered"] == 2
    assert summary["coverage"]["mean"] == pytest.approx(round(2 / 9, 4))
    assert summary["by_category"]["date"] == {"facts": 1, "covered": 1, "share": 1.0}
    assert summary["by_category"]["name"]["covered"] == 1
    assert summary["by_kind"]["continuation"]["facts_covered"] == 2
    json.dumps(summary)  # plain JSON


# --- gold questions -------------------------------------------------------------------------------
def test_asked_and_split_accuracy():
    chunks = [_chunk(FESTIVAL, "a", "fest"), _chunk("Odo Brask runs payroll.", "b", "pay")]
    items = [
        _item("It is held on May 14.", chunk_id="a"),
        _item(FESTIVAL, "recitation", "a"),
        _item("Odo Brask", chunk_id="b"),
    ]
    documents = [
        {
            "id": "fest",
            "questions": [
                {"question": "When?", "answer": "May 14"},
                {"question": "Who founded it?", "answer": "Tamsin Elveroy"},
                {"question": "Who runs payroll?", "answer": "Odo Brask"},  # another document's
            ],
        },
        {"id": "not-held", "questions": [{"question": "Q", "answer": "A"}]},
    ]
    questions = cov.asked_questions(documents, chunks, items)
    assert [(q["question"], q["asked_by"], q["gold_in_facts"]) for q in questions] == [
        ("When?", ["cloze", "recitation"], True),
        ("Who founded it?", ["recitation"], True),
        ("Who runs payroll?", [], False),
    ]
    summary = cov.question_summary(questions)
    assert summary["questions"] == 3 and summary["documents"] == 1
    assert summary["asked"]["mean"] == pytest.approx(round(2 / 3, 4))
    assert summary["asked_without"]["recitation"]["mean"] == pytest.approx(round(1 / 3, 4))
    records = [
        {"question": "When?", "contains": 1.0, "doc_id": "fest"},
        {"question": "Who founded it?", "contains": 0.0},
        {"question": "Who runs payroll?", "contains": 1.0, "doc_id": "pay"},  # not this one
    ]
    assert cov.attach_records(questions, records) == 2
    split = cov.split_accuracy(questions)
    assert split["scored"] == 2 and split["failed"] == 1 and split["failed_never_asked"] == 0
    assert split["asked"]["contains"]["mean"] == 0.5
    assert split["never_asked"]["questions"] == 0


def test_load_records_from_quality_json_or_a_list(tmp_path):
    record = {"question": "Q", "contains": 1.0, "doc_id": "d"}
    quality = tmp_path / "quality.json"
    quality.write_text(json.dumps({"records": {"stream": [record], "base": []}}))
    assert cov.load_records(quality, "stream") == [record]
    with pytest.raises(SystemExit, match="no records of mode 'doc'"):
        cov.load_records(quality, "doc")
    plain = tmp_path / "records.json"
    plain.write_text(json.dumps([{"question": "Q", "contains": 0}]))
    assert cov.load_records(plain, "stream") == [{"question": "Q", "contains": 0}]
    plain.write_text(json.dumps([{"question": "Q"}]))
    with pytest.raises(SystemExit, match="'contains'"):
        cov.load_records(plain, "stream")


# --- the script on a tiny memory ------------------------------------------------------------------
def test_script_on_a_tiny_memory(tmp_path, tiny_config):
    ids = [name.removesuffix(".md") for name in FACTS]
    memory = ParametricMemory.create(tmp_path / "memory", tiny_config)
    memory.add_documents(list(FACTS.values()), ids=ids, progress=False)
    questions = tmp_path / "questions.jsonl"
    gold = [("When is the festival?", "May 14"), ("Who runs payroll?", "Odo Brask")]
    lines = [
        {"id": doc_id, "text": text, "questions": [{"question": q, "answer": a}]}
        for doc_id, text, (q, a) in zip(ids, FACTS.values(), gold, strict=True)
    ]
    lines.append({"id": "elsewhere", "text": "x", "questions": [{"question": "Q", "answer": "A"}]})
    questions.write_text("\n".join(json.dumps(line) for line in lines))
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"question": q, "contains": 0.0} for q, _ in gold]))
    out = tmp_path / "out"
    cov.main(
        [
            str(tmp_path / "memory"),
            "--questions",
            str(questions),
            "--records",
            str(records),
            "--out",
            str(out),
        ]
    )

    result = json.loads((out / "coverage.json").read_text())
    assert result["chunks"] == len(result["per_chunk"]) >= 2
    assert result["facts"] == sum(len(c["facts"]) for c in result["per_chunk"]) > 0
    assert {"Mira Tallow", "1911", "Odo Brask"} <= {
        f["text"] for c in result["per_chunk"] for f in c["facts"]
    }
    assert result["kept_items"] == sum(k["items"] for k in result["by_kind"].values()) > 0
    section = result["questions"]
    assert section["documents"] == 2 and section["questions"] == 2
    accuracy = section["accuracy"]
    assert accuracy["matched"] == accuracy["scored"] == accuracy["failed"] == 2
    assert accuracy["asked"]["questions"] + accuracy["never_asked"]["questions"] == 2
    markdown = (out / "coverage.md").read_text()
    assert "| item kind |" in markdown and "mean coverage/chunk" in markdown
    assert "never asked" in markdown

    cov.main([str(tmp_path / "memory"), "--ignore-kinds", "recitation", "--out", str(out)])
    without = json.loads((out / "coverage.json").read_text())
    assert without["ignored_kinds"] == ["recitation"] and "recitation" not in without["by_kind"]
    assert without["covered"] <= result["covered"] and "questions" not in without


def test_questions_of_other_documents_are_refused(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "memory", tiny_config)
    memory.add_documents([FACTS["quillhaven.md"]], ids=["quillhaven"], progress=False)
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "other", "text": "x", "questions": [{"question": "Q", "answer": "A"}]})
    )
    with pytest.raises(SystemExit, match="ids differ"):
        cov.main([str(tmp_path / "memory"), "--questions", str(questions), "--out", str(tmp_path)])
