"""Answering measured (issue 26): one memory's ways of answering beside RAG and the passage in
the prompt, on the same model and device, in one run — accuracy, throughput over all the
questions at a batch size, latency one question at a time, peak GPU memory.

    python benchmarks/answering.py --memory /root/mem/n1048/level0 --n 1048 \\
        --questions-per-doc 1 --out /root/res/answering

The memory is one `benchmarks/compaction.py` ingested (same --n, --questions-per-doc: the
same sampled passages). Modes: top1, top2, top3 (`shards_per_question`; BM25's top shards
re-ranked by the base model, the default), top1-rerank1 (BM25's first shard alone),
top1-rerank5 (BM25's top 5 re-ranked), confidence
(self-routing: `answer_candidates`, the surest of the router's top 3; also scored: the
router's first candidate and whether any candidate holds the answer), recall (the retriever
path: what the LangChain and LlamaIndex retrievers hand another LLM, the memory's
recollection of the question, put in the same base model's prompt as RAG puts passages),
rag (BM25's top 3 passages in the prompt), in-prompt (the gold passage), base (the question
alone). For the
memory's modes, routing alone (`route`) is timed one question at a time beside the p50. Only
the public API is used; per-question records go to OUT/records-<mode>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from common import MAX_ANSWER_TOKENS, load_documents, open_book_prompt
from metrics import estimate, percent
from quality import RAG_TOP_K, SQUAD, questions_of, sample_documents, score_records
from retrieval import rank_passages

from parametric_memory import Candidate, ParametricMemory, RoutingConfig
from parametric_memory.engine.generation import generate
from parametric_memory.engine.models import LoadedModel, load_model

MODES = (
    "top1",
    "top1-rerank1",
    "top1-rerank5",
    "top2",
    "top3",
    "confidence",
    "recall",
    "rag",
    "in-prompt",
    "base",
)
CANDIDATES = 3
RECALL_TOKENS = 192
"""The retrievers' default `max_new_tokens`: the longest recollection handed on."""
log = logging.getLogger("answering")

Answerer = Callable[[Sequence[str]], list[str]]


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    documents = sample_documents(load_documents(args.data), args.n, 0, args.questions_per_doc)
    questions = questions_of(documents, range(len(documents)))
    memory = ParametricMemory.open(args.memory)
    result = {"memory": str(args.memory), "batch": args.batch, "rows": {}}
    for mode in args.modes:
        answerer, prompts = _mode(mode, memory, documents, questions, args)
        row, records = measure(answerer, prompts, documents, questions, args.latency_questions)
        routed = _routed_memory(mode, memory)
        if routed is not None:
            row["route_p50_s"] = route_p50(routed, prompts[: args.latency_questions])
        result["rows"][mode] = row
        if isinstance(answerer, _SelfRouted):
            rows = candidate_rows(answerer.largest, questions, documents, args.out)
            result["rows"].update(rows)
        if isinstance(answerer, _Recalled):
            held = recall_row(answerer.largest, documents, questions)
            result["rows"]["recall-holds-answer"] = held
            for record, text in zip(records, answerer.largest, strict=True):
                record["recalled"] = text
        (args.out / f"records-{mode}.json").write_text(json.dumps(records, ensure_ascii=False))
        log.info("%s: %s", mode, row)
        (args.out / "answering.json").write_text(json.dumps(result, indent=1))
        (args.out / "answering.md").write_text(render_markdown(result))
    if args.profile_route:
        texts = [q["question"] for _, _, q in questions[: args.profile_route]]
        (args.out / "route_profile.txt").write_text(route_profile(memory, texts))


def _mode(
    mode: str,
    memory: ParametricMemory,
    documents: list[dict],
    questions: list[tuple[int, int, dict]],
    args: argparse.Namespace,
) -> tuple[Answerer, list[str]]:
    """How `mode` answers, and the texts it is handed (questions, or prompts with passages)."""
    texts = [q["question"] for _, _, q in questions]
    if mode.startswith("top1-rerank"):
        routed = _routed_memory(mode, memory)
        return lambda batch: routed.ask_batch(list(batch), max_new_tokens=MAX_ANSWER_TOKENS), texts
    if mode.startswith("top"):
        k = int(mode[3:])
        return lambda batch: memory.ask_batch(
            list(batch), max_new_tokens=MAX_ANSWER_TOKENS, shards_per_question=k
        ), texts
    if mode == "confidence":
        return _SelfRouted(memory), texts
    base = _base_model(memory)
    if mode == "recall":
        return _Recalled(memory, base, args.batch), texts
    if mode == "base":
        prompts = texts
    elif mode == "in-prompt":
        prompts = [open_book_prompt([documents[i]["text"]], q["question"]) for i, _, q in questions]
    else:
        ranked = rank_passages([d["text"] for d in documents], texts, RAG_TOP_K)
        prompts = [
            open_book_prompt([documents[k]["text"] for k in top], text)
            for top, text in zip(ranked, texts, strict=True)
        ]
    return lambda batch: read(base, batch, args.batch), prompts


def read(base: LoadedModel, prompts: Sequence[str], batch: int) -> list[str]:
    """The base model's greedy answers to whole prompts (questions, with or without text)."""
    return [a.strip() for a in generate(base, list(prompts), MAX_ANSWER_TOKENS, batch)]


class _SelfRouted:
    """Self-routed answers (`answer_candidates`, the surest kept, as `ask_batch` with
    selection "confidence" keeps it); the largest call's candidates stay for
    `candidate_rows`."""

    def __init__(self, memory: ParametricMemory) -> None:
        self._memory = memory
        self.largest: list[list[Candidate]] = []

    def __call__(self, batch: Sequence[str]) -> list[str]:
        answered = self._memory.answer_candidates(
            list(batch), candidates=CANDIDATES, max_new_tokens=MAX_ANSWER_TOKENS
        )
        if len(answered) >= len(self.largest):
            self.largest = answered
        return [max(cs, key=lambda c: c.confidence).answer for cs in answered]


class _Recalled:
    """The retriever path as a RAG user runs it: the memory recalls what it holds about each
    question (the retrievers' first document, `k` = 1, their default; their `batch` and
    async calls are answered in one `recall_batch` as here), then the base model answers
    with that text in its prompt, as RAG's passages are put there. The recollections of the
    largest call stay for its records."""

    def __init__(self, memory: ParametricMemory, base: LoadedModel, batch: int) -> None:
        self._memory, self._base, self._batch = memory, base, batch
        self.largest: list[str] = []

    def __call__(self, questions: Sequence[str]) -> list[str]:
        recalled = self._memory.recall_batch(list(questions), max_new_tokens=RECALL_TOKENS)
        texts = [r.text for r in recalled]
        if len(texts) >= len(self.largest):
            self.largest = texts
        prompts = [open_book_prompt([t], q) for t, q in zip(texts, questions, strict=True)]
        return read(self._base, prompts, self._batch)


def _routed_memory(mode: str, memory: ParametricMemory) -> ParametricMemory | None:
    """The memory a memory mode answers from (None for the prompt baselines)."""
    if mode.startswith("top1-rerank"):
        return _reranking(memory.root, int(mode.removeprefix("top1-rerank")))
    return memory if mode.startswith("top") or mode in ("confidence", "recall") else None


def route_p50(memory: ParametricMemory, questions: list[str]) -> float | None:
    """Median seconds to route one question alone (`route`: BM25 and the re-ranking's forward
    pass, no answer): the share of a lone question's latency spent choosing its shard."""
    if not questions:
        return None
    memory.route(questions[:1])
    latencies = []
    for question in questions:
        started = time.perf_counter()
        memory.route([question])
        latencies.append(time.perf_counter() - started)
    return round(statistics.median(latencies), 4)


def route_profile(memory: ParametricMemory, questions: list[str]) -> str:
    """Where a lone question's routing spends its time: `torch.profiler`'s table of `route`
    called once per question (after one call to warm up), operators by total CPU time, with
    the device's time beside them where there is one."""
    from torch.profiler import ProfilerActivity, profile

    memory.route(questions[:1])
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        for question in questions:
            memory.route([question])
    averages = profiler.key_averages()
    table = averages.table(sort_by="cpu_time_total", row_limit=40) if averages else "no operator"
    return f"route() of {len(questions)} questions, one at a time\n\n{table}\n"


@functools.cache
def _reranking(root: Path, candidates: int) -> ParametricMemory:
    """The same memory opened again, re-ranking BM25's top `candidates` shards (1: none)."""
    return ParametricMemory.open(root, routing=RoutingConfig(rerank=candidates))


@functools.cache
def _base_model(memory: ParametricMemory) -> LoadedModel:
    """The memory's base model without its adapter, loaded once (the prompt baselines)."""
    return load_model(memory.config)


def measure(
    answer: Answerer,
    prompts: list[str],
    documents: list[dict],
    questions: list[tuple[int, int, dict]],
    latency_questions: int,
) -> tuple[dict, list[dict]]:
    """Accuracy and throughput over all prompts in one call, the first call (shards read from
    disk, decode graphs captured) and the next (warm); latency of the first
    `latency_questions` one at a time."""
    answer(prompts[:1])
    _reset_peak()
    started = time.perf_counter()
    answer(prompts)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    answers = answer(prompts)
    seconds = time.perf_counter() - started
    peak = _peak_gib()
    latencies = []
    for prompt in prompts[:latency_questions]:
        started = time.perf_counter()
        answer([prompt])
        latencies.append(time.perf_counter() - started)
    records = score_records(documents, questions, answers)
    row = {
        "questions": len(records),
        "contains": estimate([r["contains"] for r in records]),
        "f1": estimate([r["f1"] for r in records]),
        "first_seconds": round(first_seconds, 2),
        "first_questions_per_s": round(len(records) / first_seconds, 2),
        "seconds": round(seconds, 2),
        "questions_per_s": round(len(records) / seconds, 2),
        "p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "p95_s": round(_quantile(latencies, 0.95), 4) if latencies else None,
        "peak_gib": peak,
    }
    return row, records


def candidate_rows(
    answered: list[list[Candidate]],
    questions: list[tuple[int, int, dict]],
    documents: list[dict],
    out: Path,
) -> dict[str, dict]:
    """Of the self-routed candidates: the router's first one alone, the one whose shard
    raised its answer's mean log-probability most over the base model, and whether any of
    them holds the answer (what a perfect chooser among them would reach)."""
    keep = [[dataclasses.asdict(c) for c in candidates] for candidates in answered]
    (out / "candidates.json").write_text(json.dumps(keep, ensure_ascii=False))
    first = score_records(documents, questions, [cs[0].answer for cs in answered])
    gain = score_records(documents, questions, [max(cs, key=_gain).answer for cs in answered])
    any_right = [
        max(score_records(documents, [question], [c.answer])[0]["contains"] for c in cs)
        for question, cs in zip(questions, answered, strict=True)
    ]
    return {
        "candidates-first": {"contains": estimate([r["contains"] for r in first])},
        "candidates-gain": {"contains": estimate([r["contains"] for r in gain])},
        f"candidates-any-of-{CANDIDATES}": {"contains": estimate(any_right)},
    }


def recall_row(
    recalled: list[str], documents: list[dict], questions: list[tuple[int, int, dict]]
) -> dict:
    """How often the recollection itself contains the gold answer (what the reading model
    could at best find in it), and its mean length in words."""
    held = score_records(documents, questions, recalled)
    return {
        "contains": estimate([r["contains"] for r in held]),
        "mean_words": round(statistics.fmean(len(t.split()) for t in recalled), 1),
    }


def _gain(candidate: Candidate) -> float:
    return candidate.confidence - candidate.base_confidence


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render_markdown(result: dict) -> str:
    lines = [
        f"Answering, memory `{result['memory']}`, batch {result['batch']}",
        "",
        "| mode | contains gold [95% CI] | questions/s, first call | questions/s | p50 s | p95 s "
        "| peak GiB | routing alone, p50 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in result["rows"].items():
        keys = (
            "first_questions_per_s",
            "questions_per_s",
            "p50_s",
            "p95_s",
            "peak_gib",
            "route_p50_s",
        )
        timing = [row.get(key, "") for key in keys]
        lines.append(
            f"| {mode} | {percent(row['contains'])} | " + " | ".join(str(t) for t in timing) + " |"
        )
    return "\n".join(lines) + "\n"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", type=Path, required=True, help="a level-0 memory folder")
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--n", type=int, default=100, help="passages sampled (as the ingest)")
    parser.add_argument("--questions-per-doc", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64, help="prompt baselines' batch size")
    parser.add_argument("--latency-questions", type=int, default=32)
    parser.add_argument("--modes", default=",".join(MODES), help="a list of " + ",".join(MODES))
    parser.add_argument(
        "--profile-route",
        type=int,
        default=0,
        help="profile this many lone route() calls into OUT/route_profile.txt (0: none)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    return args


if __name__ == "__main__":
    main()
