"""Routing re-ranked by the base model (`RoutingConfig.rerank`), measured on an answering run's
candidates, no GPU needed (issue 26).

`answering.py` (mode confidence) keeps every question's answers from each of the router's top
3 shards (`candidates.json`). Here the same router is rebuilt over the same sampled passages,
chunked as the memory chunks them, and each question's top 3 are re-ordered as the memory
re-orders them (`reranking.question_likelihoods`, `reranking.ordered`) for each BM25 weight
asked; the answer of the shard put first is then looked up among that question's candidates.
So every figure is the memory's top-1 answer under that routing, the answers written on the
GPU, the re-ranking run here (float32 on the CPU). The weight is chosen on the first
--calibration questions and reported on the rest.

    python benchmarks/reranking.py --n 1048 \\
        --candidates benchmarks/results/answering/h100-n1048/candidates.json \\
        --out benchmarks/results/reranking/cpu-n1048
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import load_documents
from metrics import estimate, percent
from quality import SQUAD, questions_of, sample_documents, score_records
from routing_accuracy import default_token_counter

from parametric_memory import MemoryConfig
from parametric_memory.config import ChunkingConfig
from parametric_memory.engine.models import load_model
from parametric_memory.method.chunking import chunk_document
from parametric_memory.records import content_hash
from parametric_memory.reranking import ordered, question_likelihoods
from parametric_memory.routing import ShardRouter

CANDIDATES = 3


def main() -> None:
    args = _parse_args()
    documents = sample_documents(load_documents(args.data), args.n, 0, args.questions_per_doc)
    questions = questions_of(documents, range(len(documents)))[: args.limit]
    candidates = json.loads(args.candidates.read_text())[: len(questions)]
    texts = [q["question"] for _, _, q in questions]
    ranked = passage_router(documents).ranked_chunks(texts, CANDIDATES)
    lm = load_model(MemoryConfig(device=args.device))
    started = time.perf_counter()
    likelihoods = question_likelihoods(lm, texts, ranked)
    seconds = time.perf_counter() - started
    rows = {}
    for weight in args.weights:
        firsts = [row[0][0] for row in ordered(ranked, likelihoods, weight)]
        rows[f"{weight:g}"] = routed_row(documents, questions, candidates, firsts)
    bm25 = [row[0].shard for row in ranked]
    result = {
        "n": args.n,
        "questions": len(questions),
        "calibration": args.calibration,
        "rerank_seconds": round(seconds, 1),
        "bm25": routed_row(documents, questions, candidates, bm25),
        "reranked": rows,
        "held_out": held_out(documents, questions, candidates, ranked, likelihoods, args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reranking.json").write_text(json.dumps(result, indent=1))
    (args.out / "reranking.md").write_text(render_markdown(result))
    print(render_markdown(result))


def passage_router(documents: list[dict]) -> ShardRouter:
    """The memory's router over the sample: passage i is shard i, chunked as ingest does."""
    count_tokens = default_token_counter()
    size = ChunkingConfig().chunk_tokens
    chunks = [
        chunk
        for document in documents
        for chunk in chunk_document(
            document["id"], content_hash(document["text"]), document["text"], size, count_tokens
        )
    ]
    return ShardRouter(chunks, {d["id"]: i for i, d in enumerate(documents)})


def routed_row(documents, questions, candidates, firsts: list[int]) -> dict:
    """Routed to the gold passage, and the chosen shard's answer scored (a shard that is
    not among the run's candidates counts as unanswered)."""
    answers, missing = [], 0
    for shard, row in zip(firsts, candidates, strict=True):
        answer = next(
            (c["answer"] for c in row if c["document_ids"] == [documents[shard]["id"]]), ""
        )
        missing += answer == "" and bool(row)
        answers.append(answer)
    records = score_records(documents, questions, answers)
    right = [float(shard == i) for shard, (i, _, _) in zip(firsts, questions, strict=True)]
    return {
        "routed_right": estimate(right),
        "contains": estimate([r["contains"] for r in records]),
        "not_among_candidates": missing,
    }


def held_out(documents, questions, candidates, ranked, likelihoods, args) -> dict:
    """The weight with the most right answers on the first --calibration questions, scored
    on the others."""
    cut = args.calibration

    def contains(weight: float, part: slice) -> float:
        firsts = [row[0][0] for row in ordered(ranked[part], likelihoods[part], weight)]
        row = routed_row(documents, questions[part], candidates[part], firsts)
        return row["contains"]["mean"]

    best = max(args.weights, key=lambda w: contains(w, slice(0, cut)))
    rest = slice(cut, None)
    firsts = [row[0][0] for row in ordered(ranked[rest], likelihoods[rest], best)]
    bm25 = [row[0].shard for row in ranked[rest]]
    return {
        "weight": best,
        "questions": len(questions) - cut,
        "reranked": routed_row(documents, questions[rest], candidates[rest], firsts),
        "bm25": routed_row(documents, questions[rest], candidates[rest], bm25),
    }


def render_markdown(result: dict) -> str:
    lines = [
        f"# Routing re-ranked by the base model: {result['n']} passages, "
        f"{result['questions']} questions",
        "",
        "| routing | routed to the gold passage | contains gold [95% CI] |",
        "|---|---|---|",
        _line("BM25 top 1", result["bm25"]),
    ]
    for weight, row in result["reranked"].items():
        lines.append(_line(f"BM25's top {CANDIDATES} re-ranked, BM25 weight {weight}", row))
    held = result["held_out"]
    lines += [
        "",
        f"Weight chosen on the first {result['calibration']} questions: {held['weight']:g}; "
        f"on the other {held['questions']}:",
        "",
        "| routing | routed to the gold passage | contains gold [95% CI] |",
        "|---|---|---|",
        _line("BM25 top 1", held["bm25"]),
        _line("re-ranked", held["reranked"]),
        "",
        f"Re-ranking every question took {result['rerank_seconds']} s.",
    ]
    return "\n".join(lines) + "\n"


def _line(label: str, row: dict) -> str:
    return f"| {label} | {percent(row['routed_right'])} | {percent(row['contains'])} |"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--n", type=int, default=1048)
    parser.add_argument("--questions-per-doc", type=int, default=1)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT questions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    main()
