"""Closed-book accuracy on invented-facts documents (facts no model can know).

Rows, measured side by side on the same model with greedy decoding:
  base       — the question alone (floor)
  in-prompt  — the document in the prompt (the target)
  memory/doc — a fresh memory per document, then its questions
  memory/stream — all documents added to one memory in order, then every question

    python benchmarks/invented_facts.py --docs 20 --out benchmarks/results/invented_facts
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import answer_prompts, ask_memory, ingest_document, load_documents, open_book_prompt
from metrics import contains_answer, mean, score_answer

from parametric_memory import MemoryConfig, ParametricMemory
from parametric_memory.engine.models import load_model

DATA = Path(__file__).parent / "data" / "invented_facts.jsonl"


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    documents = load_documents(args.data)[args.skip : args.skip + args.docs]
    config = MemoryConfig(**json.loads(args.config), device=args.device)
    started = time.time()
    rows: dict[str, dict] = {}
    modes = args.modes.split(",")
    if "base" in modes or "in-prompt" in modes:
        rows.update(_closed_and_open_book(documents, config, modes))
    scratch = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    try:
        if "doc" in modes:
            rows["memory/doc"] = _memory_per_document(documents, config, scratch)
        if "stream" in modes:
            rows["memory/stream"] = _memory_streamed(documents, config, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "label": args.label,
        "documents": len(documents),
        "questions": sum(len(d["questions"]) for d in documents),
        "config": json.loads(config.model_dump_json()),
        "rows": rows,
        "wall_seconds": round(time.time() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "command": " ".join(sys.argv),
    }
    _write(result, args.out)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--skip", type=int, default=0, help="start at this document")
    parser.add_argument("--modes", default="base,in-prompt,doc,stream")
    parser.add_argument("--config", default="{}", help="MemoryConfig fields as JSON")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--label", default="default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/invented_facts"))
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args()


def _closed_and_open_book(documents: list[dict], config: MemoryConfig, modes: list[str]):
    lm = load_model(config)
    rows = {}
    questions = [(d, q) for d in documents for q in d["questions"]]
    if "base" in modes:
        answers = answer_prompts(lm, [q["question"] for _, q in questions])
        rows["base"] = _score(questions, answers)
    if "in-prompt" in modes:
        prompts = [open_book_prompt([d["text"]], q["question"]) for d, q in questions]
        rows["in-prompt"] = _score(questions, answer_prompts(lm, prompts))
    return rows


def _memory_per_document(documents: list[dict], config: MemoryConfig, scratch: Path) -> dict:
    questions, answers, seconds = [], [], []
    for index, document in enumerate(documents):
        memory = ParametricMemory.create(scratch / f"doc-{index}", config)
        seconds.append(ingest_document(memory, document))
        questions += [(document, q) for q in document["questions"]]
        answers += ask_memory(memory, [q["question"] for q in document["questions"]])
        logging.warning("memory/doc %d/%d %.1fs", index + 1, len(documents), seconds[-1])
    row = _score(questions, answers)
    row["ingest_seconds_per_document"] = round(sum(seconds) / len(seconds), 2)
    return row


def _memory_streamed(documents: list[dict], config: MemoryConfig, scratch: Path) -> dict:
    memory = ParametricMemory.create(scratch / "stream", config)
    seconds = []
    for document in documents:
        seconds.append(ingest_document(memory, document))
        logging.warning("memory/stream %d/%d %.1fs", len(seconds), len(documents), seconds[-1])
    questions = [(d, q) for d in documents for q in d["questions"]]
    answers = ask_memory(memory, [q["question"] for _, q in questions])
    row = _score(questions, answers)
    half = len(documents) // 2 * 5
    hits = [contains_answer(a, q["answer"]) for (_, q), a in zip(questions, answers, strict=True)]
    row["first_half_contains"] = mean(hits[:half])
    row["second_half_contains"] = mean(hits[half:])
    row["ingest_seconds_per_document"] = round(sum(seconds) / len(seconds), 2)
    row["adapter_bytes"] = memory.info().adapter_bytes
    return row


def _score(questions: list[tuple[dict, dict]], answers: list[str]) -> dict:
    scores = [score_answer(a, q["answer"]) for (_, q), a in zip(questions, answers, strict=True)]
    return {
        "contains": mean(s["contains"] for s in scores),
        "f1": mean(s["f1"] for s in scores),
        "per_document_contains": _per_document(questions, scores),
        "answers": [
            {"document": d["id"], "question": q["question"], "gold": q["answer"], "answer": a}
            for (d, q), a in zip(questions, answers, strict=True)
        ],
    }


def _per_document(questions: list[tuple[dict, dict]], scores: list[dict]) -> dict[str, float]:
    hits: dict[str, list[float]] = {}
    for (document, _), score in zip(questions, scores, strict=True):
        hits.setdefault(document["id"], []).append(score["contains"])
    return {document: mean(values) for document, values in hits.items()}


def _write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['label']}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Invented facts, {result['documents']} documents, {result['questions']} questions "
        f"({result['label']})",
        "",
        "| row | answer contains gold | token F1 | ingest s/doc |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        seconds = row.get("ingest_seconds_per_document", "")
        lines.append(f"| {name} | {row['contains']:.1%} | {row['f1']:.3f} | {seconds} |")
    (out / f"{result['label']}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
