"""Routing re-ranked by the base model (`RoutingConfig.rerank`), measured on an answering run's
candidates, no GPU needed (issue 26).

`answering.py` (mode confidence) keeps every question's answers from each of the router's top
3 shards (`candidates.json`). Here the same router is rebuilt over the same sampled passages,
chunked as the memory chunks them, and each question's top 3 are re-ordered as the memory
re-orders them (`reranking.question_likelihoods`, `reranking.ordered`) for each BM25 weight
asked, with the model reading each candidate's `question_window` of --words words (several
compared side by side; 0: the whole chunk); the answer of the shard put first is then looked
up among that question's candidates.
So every figure is the memory's top-1 answer under that routing, the answers written on the
GPU, the re-ranking run here (float32 on the CPU). The weight is chosen on the first
--calibration questions and reported on the rest.

    python benchmarks/reranking.py --n 1048 \\
        --candidates benchmarks/results/answering/h100-n1048/candidates.json \\
        --words 0 48 --out benchmarks/results/reranking/cpu-n1048

With --more-candidates 3 5 10, routing alone (the answers exist for 3 candidates only): how
often the gold passage comes first when BM25's top K are re-ranked.
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

from parametric_memory import MemoryConfig, RoutingConfig
from parametric_memory.config import ChunkingConfig
from parametric_memory.engine.models import load_model
from parametric_memory.method.chunking import chunk_document
from parametric_memory.records import content_hash
from parametric_memory.reranking import bm25_is_clear, ordered, question_likelihoods
from parametric_memory.routing import ShardRouter

CANDIDATES = 3


def main() -> None:
    args = _parse_args()
    documents = sample_documents(load_documents(args.data), args.n, 0, args.questions_per_doc)
    questions = questions_of(documents, range(len(documents)))[: args.limit]
    candidates = json.loads(args.candidates.read_text())[: len(questions)]
    router = passage_router(documents)
    lm = load_model(MemoryConfig(device=args.device))
    if args.more_candidates:
        more = routed_right_by_candidates(lm, router, questions, args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "more_candidates.json").write_text(json.dumps(more, indent=1))
        print(json.dumps(more, indent=1))
        return
    ranked = router.ranked_chunks([q["question"] for _, _, q in questions], CANDIDATES)
    result = {
        "n": args.n,
        "questions": len(questions),
        "calibration": args.calibration,
        "bm25": routed_row(documents, questions, candidates, [row[0].shard for row in ranked]),
        "by_words": {
            str(words): reranked_rows(lm, documents, questions, candidates, ranked, words, args)
            for words in args.words
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reranking.json").write_text(json.dumps(result, indent=1))
    (args.out / "reranking.md").write_text(render_markdown(result))
    print(render_markdown(result))


def reranked_rows(lm, documents, questions, candidates, ranked, words: int, args) -> dict:
    """Each question's top 3 re-ranked with the model reading `words` words of each
    candidate's chunk (0: all of it), for every BM25 weight of --weights, and the weight
    chosen on the first --calibration questions scored on the rest."""
    texts = [q["question"] for _, _, q in questions]
    started = time.perf_counter()
    likelihoods = question_likelihoods(lm, texts, ranked, words)
    seconds = time.perf_counter() - started
    rows = {}
    for weight in args.weights:
        firsts = [row[0][0] for row in ordered(ranked, likelihoods, weight)]
        rows[f"{weight:g}"] = routed_row(documents, questions, candidates, firsts)
    return {
        "rerank_seconds": round(seconds, 1),
        "reranked": rows,
        "held_out": held_out(documents, questions, candidates, ranked, likelihoods, args),
        "by_margin": {
            f"{margin:g}": margin_row(documents, questions, candidates, ranked, likelihoods, margin)
            for margin in args.margins
        },
    }


def margin_row(documents, questions, candidates, ranked, likelihoods, margin: float) -> dict:
    """The default weight's routing when questions whose BM25 first candidate is clear by
    `margin` (`reranking.bm25_is_clear`) keep BM25's order unread, and the share skipped."""
    clear = [bm25_is_clear(row, margin) for row in ranked]
    kept = [[] if skip else scores for skip, scores in zip(clear, likelihoods, strict=True)]
    weight = RoutingConfig().rerank_bm25_weight
    firsts = [row[0][0] for row in ordered(ranked, kept, weight)]
    row = routed_row(documents, questions, candidates, firsts)
    return {"skipped": round(sum(clear) / len(clear), 4), **row}


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


def routed_right_by_candidates(lm, router: ShardRouter, questions, args) -> dict:
    """Of the questions from --calibration on (--limit: up to there), the share routed to
    the gold passage when BM25's top k are re-ranked, for each k of --more-candidates
    (no answers: the run's candidates are only the top 3)."""
    part = questions[args.calibration :]
    texts = [q["question"] for _, _, q in part]
    ranked = router.ranked_chunks(texts, max(args.more_candidates))
    likelihoods = question_likelihoods(lm, texts, ranked, args.words[0])
    gold = [i for i, _, _ in part]
    result = {"questions": len(part), "first_question": args.calibration, "rows": {}}
    for k in [1, *args.more_candidates]:
        top = [row[:k] for row in ranked]
        kept = [
            mine[:k] if len(row) > 1 else [] for mine, row in zip(likelihoods, top, strict=True)
        ]
        for weight in args.weights:
            firsts = [row[0][0] for row in ordered(top, kept, weight)]
            right = [float(f == g) for f, g in zip(firsts, gold, strict=True)]
            covered = [float(g in {c.shard for c in row}) for g, row in zip(gold, top, strict=True)]
            result["rows"][f"top {k}, weight {weight:g}"] = {
                "routed_right": estimate(right),
                "gold_among_them": estimate(covered),
            }
    return result


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
    for words, variant in result["by_words"].items():
        for weight, row in variant["reranked"].items():
            label = f"top {CANDIDATES} re-ranked, {_reading(words)}, BM25 weight {weight}"
            lines.append(_line(label, row))
    for words, variant in result["by_words"].items():
        held = variant["held_out"]
        lines += [
            "",
            f"{_reading(words).capitalize()}: re-ranking every "
            f"question took {variant['rerank_seconds']} s; the weight chosen on the first "
            f"{result['calibration']} questions, {held['weight']:g}, on the other "
            f"{held['questions']}:",
            "",
            "| routing | routed to the gold passage | contains gold [95% CI] |",
            "|---|---|---|",
            _line("BM25 top 1", held["bm25"]),
            _line("re-ranked", held["reranked"]),
        ]
        lines += _margin_lines(words, variant.get("by_margin", {}))
    return "\n".join(lines) + "\n"


def _margin_lines(words: str, by_margin: dict) -> list[str]:
    """Questions whose BM25 first candidate is clear by each margin left unread."""
    if not by_margin:
        return []
    lines = [
        "",
        f"{_reading(words).capitalize()}, the default weight, questions whose BM25 first "
        "candidate scores at least MARGIN times its second not re-ranked:",
        "",
        "| margin | questions not re-ranked | routed to the gold passage "
        "| contains gold [95% CI] |",
        "|---|---|---|---|",
    ]
    for margin, row in by_margin.items():
        routed, contains = percent(row["routed_right"]), percent(row["contains"])
        lines.append(f"| {margin} | {row['skipped']:.1%} | {routed} | {contains} |")
    return lines


def _reading(words: str) -> str:
    """What the model read of each candidate, as --words gave it."""
    return "whole chunks" if words == "0" else f"{words} words a chunk"


def _line(label: str, row: dict) -> str:
    return f"| {label} | {percent(row['routed_right'])} | {percent(row['contains'])} |"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--n", type=int, default=1048)
    parser.add_argument("--questions-per-doc", type=int, default=1)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument(
        "--words",
        type=int,
        nargs="+",
        default=[RoutingConfig().rerank_words],
        help="words of each candidate's chunk the model reads (0: the whole chunk); several "
        "are compared side by side (--more-candidates uses the first)",
    )
    parser.add_argument(
        "--margins",
        type=float,
        nargs="*",
        default=[],
        help="also: routing with the default weight when questions whose BM25 first "
        "candidate scores at least MARGIN times its second are not re-ranked",
    )
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT questions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--more-candidates",
        type=int,
        nargs="+",
        help="instead: routing alone, BM25's top K re-ranked for each K (questions from "
        "--calibration to --limit)",
    )
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    main()
