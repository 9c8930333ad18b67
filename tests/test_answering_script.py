"""benchmarks/answering.py run end to end on a tiny memory: every mode it is asked for answers
every question and is timed, and the retriever path (`recall`) keeps what was recalled beside
each answer, so a run on the GPU cannot fail on the script itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny_model import FACTS

from parametric_memory import ParametricMemory, RoutingConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GOLD = [("When is the festival near Orsk Hollow?", "May 14"), ("Who runs payroll?", "Odo Brask")]
"""The first shares words with both documents, so routing reads both with the model."""


def test_answering_script_on_a_tiny_memory(tmp_path, tiny_config, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import answering

    ids = [name.removesuffix(".md") for name in FACTS]
    # every question re-ranked, so routing runs the model and its profile has operators
    config = tiny_config.model_copy(update={"routing": RoutingConfig(rerank_clear_margin=None)})
    memory = ParametricMemory.create(tmp_path / "memory", config)
    memory.add_documents(list(FACTS.values()), ids=ids, progress=False)
    data = tmp_path / "data.jsonl"
    lines = [
        {"id": doc_id, "text": text, "questions": [{"question": q, "answer": a}]}
        for doc_id, text, (q, a) in zip(ids, FACTS.values(), GOLD, strict=True)
    ]
    data.write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "out"
    argv = ["answering.py", "--memory", str(tmp_path / "memory"), "--data", str(data)]
    argv += ["--n", "2", "--latency-questions", "1", "--modes", "top1,recall,rag"]
    argv += ["--profile-route", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    answering.main()

    rows = json.loads((out / "answering.json").read_text())["rows"]
    assert {"top1", "recall", "rag", "recall-holds-answer"} <= set(rows)
    for mode in ("top1", "recall", "rag"):
        assert rows[mode]["questions"] == 2
        assert rows[mode]["questions_per_s"] > 0 and rows[mode]["p50_s"] is not None
    assert rows["recall"]["route_p50_s"] is not None and "route_p50_s" not in rows["rag"]
    assert rows["recall-holds-answer"]["mean_words"] > 0
    records = json.loads((out / "records-recall.json").read_text())
    assert sorted(r["question"] for r in records) == sorted(q for q, _ in GOLD)
    assert all(isinstance(r["recalled"], str) and r["recalled"] for r in records)
    assert "| recall |" in (out / "answering.md").read_text()
    profile = (out / "route_profile.txt").read_text()
    assert profile.startswith("route() of 2 questions") and "aten::" in profile
