"""Compaction measured: N passages into one memory (level 0: a shard each), then compacted
into shards of related passages at one or more group sizes, against the same model with the
gold passage in its prompt, with BM25's top 3, and with the question alone.

    python benchmarks/compaction.py --n 100 --out benchmarks/results/scratch/c100
    python benchmarks/compaction.py --n 1048 --questions-per-doc 1 --sizes 32,64 \\
        --memory /root/cmem --out /root/c1048 --phases ingest,compact

Phases (any subset, in this order; each one's result is saved to OUT/compaction.json as it
ends, and a rerun with the same --out skips the phases already there, so a run can be split
over several processes): ingest (one `add_documents` call, compaction off), level0 (its
answers), compact (for each size: a hard-linked copy of the level-0 memory compacted, then
its answers), prompts (base, in-prompt, rag). Only the public API is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common import answer_prompts, ask_memory, load_documents, open_book_prompt
from metrics import estimate, percent
from quality import (
    SQUAD,
    answer_from_prompts,
    questions_of,
    sample_documents,
    score_records,
)

from parametric_memory import CompactionConfig, MemoryConfig, ParametricMemory
from parametric_memory.engine.models import load_model

PHASES = ("ingest", "level0", "recalled", "compact", "prompts")
RECALL_TOKENS = 128
"""Tokens a recall writes out for the recalled row (about a passage's worth)."""
log = logging.getLogger("compaction")


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    result_file = args.out / "compaction.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {"rows": {}}
    documents = sample_documents(load_documents(args.data), args.n, 0, args.questions_per_doc)
    config = MemoryConfig.model_validate(
        {**json.loads(args.config), "compaction": {"auto_after": None}}
    )

    def save() -> None:
        result_file.write_text(json.dumps(result, indent=1, ensure_ascii=False))
        (args.out / "compaction.md").write_text(render_markdown(result, args))

    for phase in [p for p in PHASES if p in args.phases]:
        run_phase(phase, args, documents, config, result, save)
        save()


def run_phase(
    phase: str,
    args: argparse.Namespace,
    documents: list[dict],
    config: MemoryConfig,
    result: dict,
    save: Callable[[], None],
) -> None:
    rows = result["rows"]
    level0 = args.memory / "level0"
    if phase == "ingest" and "ingest" not in result:
        result["ingest"] = ingest(documents, config, level0)
    elif phase == "level0":
        for k in args.shards_per_question:
            name = "level0" if k == 1 else f"level0-top{k}"
            if name not in rows:
                keep = args.out / f"records-{name}.json"
                rows[name] = evaluate(ParametricMemory.open(level0), documents, k, keep)
                save()
    elif phase == "recalled" and "recalled" not in rows:
        keep = args.out / "records-recalled.json"
        rows["recalled"] = recalled(ParametricMemory.open(level0), documents, keep)
    elif phase == "compact":
        for size in args.sizes:
            for variant, overrides in args.variants.items():
                name = f"compacted-{size}" + (f"-{variant}" if variant else "")
                if name not in rows:
                    rows[name] = compact_and_evaluate(level0, name, size, documents, overrides)
                    save()
    elif phase == "prompts" and "rag" not in rows:
        answered = answer_from_prompts(
            documents, list(range(len(documents))), config, ["base", "in-prompt", "rag"]
        )
        rows.update({mode: summary(records) for mode, records in answered.items()})


def ingest(documents: list[dict], config: MemoryConfig, folder: Path) -> dict:
    """One `add_documents` call. An interrupted ingest resumes: the documents it committed
    are known content, which `add_documents` skips; the seconds of every attempt add up."""
    spent_file = folder.with_name(folder.name + ".ingest-seconds")
    spent = float(spent_file.read_text()) if spent_file.exists() else 0.0
    if (folder / "manifest.json").exists():
        memory = ParametricMemory.open(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        memory = ParametricMemory.create(folder, config)
    started = time.perf_counter()
    with _adding_up(spent_file, spent, started):
        memory.add_documents([d["text"] for d in documents], ids=[d["id"] for d in documents])
    seconds = spent + time.perf_counter() - started
    info = memory.info()
    log.info("level 0: %d documents in %.1fs", info.documents, seconds)
    return {"seconds": round(seconds, 1), **_size(info)}


@contextmanager
def _adding_up(spent_file: Path, spent: float, started: float) -> Iterator[None]:
    """Records the seconds spent so far even when the process is stopped by a signal."""

    def record(signum: int, _frame) -> None:
        spent_file.write_text(str(spent + time.perf_counter() - started))
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def compact_and_evaluate(
    level0: Path, name: str, size: int, documents: list[dict], overrides: dict
) -> dict:
    folder = level0.with_name(name)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(level0, folder, copy_function=os.link)  # the level-0 files stay as they are
    memory = ParametricMemory.open(folder)
    settings = {**overrides, "documents_per_shard": size, "auto_after": None}
    report = memory.compact(CompactionConfig(**settings))
    log.info("compacted into %d shards in %.1fs", report.shards_after, report.seconds)
    row = evaluate(memory, documents)
    row.update({"compaction_seconds": round(report.seconds, 1), **_size(memory.info())})
    return row


def evaluate(
    memory: ParametricMemory, documents: list[dict], shards: int = 1, keep: Path | None = None
) -> dict:
    """The memory's summary row; its per-question records also go to `keep` (a JSON list that
    `benchmarks/coverage.py --records` splits by whether the transfer set asked them)."""
    questions = questions_of(documents, range(len(documents)))
    started = time.perf_counter()
    answers = ask_memory(memory, [q["question"] for _, _, q in questions], shards)
    seconds = time.perf_counter() - started
    records = score_records(documents, questions, answers)
    if keep is not None:
        keep.write_text(json.dumps(records, ensure_ascii=False))
    row = summary(records)
    row.update({"answer_seconds": round(seconds, 1), **_size(memory.info())})
    return row


def recalled(memory: ParametricMemory, documents: list[dict], keep: Path) -> dict:
    """The retriever path as a RAG user runs it: the memory recalls what it holds about each
    question (`recall_batch`, as the integrations' retrievers do), then the same base model,
    without the memory's adapter, answers with that text in its prompt."""
    questions = questions_of(documents, range(len(documents)))
    texts = [q["question"] for _, _, q in questions]
    started = time.perf_counter()
    recollections = memory.recall_batch(texts, max_new_tokens=RECALL_TOKENS)
    recall_seconds = time.perf_counter() - started
    prompts = [open_book_prompt([r.text], q) for r, q in zip(recollections, texts, strict=True)]
    started = time.perf_counter()
    answers = answer_prompts(load_model(memory.config), prompts)  # the same base model
    records = score_records(documents, questions, answers)
    keep.write_text(json.dumps(records, ensure_ascii=False))
    row = summary(records)
    row.update(
        {
            "recall_seconds": round(recall_seconds, 1),
            "answer_seconds": round(time.perf_counter() - started, 1),
        }
    )
    return row


def summary(records: list[dict]) -> dict:
    return {
        "questions": len(records),
        "contains": estimate([r["contains"] for r in records]),
        "f1": estimate([r["f1"] for r in records]),
    }


def _size(info) -> dict:
    return {
        "shards": info.shards,
        "transfer_items": info.transfer_items,
        "adapter_bytes": info.adapter_bytes,
        "adapter_bytes_per_document": round(info.adapter_bytes / max(1, info.documents)),
    }


def render_markdown(result: dict, args: argparse.Namespace) -> str:
    lines = [
        f"# Compaction, {args.n} passages of {args.data.name} "
        f"({args.questions_per_doc or 'all'} questions each)",
        "",
        "| row | contains gold [95% CI] | F1 | shards | adapter MB/doc | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        mb = row.get("adapter_bytes_per_document")
        seconds = row.get("compaction_seconds", row.get("answer_seconds", ""))
        lines.append(
            f"| {name} | {percent(row['contains'])} "
            f"| {row['f1']['mean']:.3f} | {row.get('shards', '')} "
            f"| {'' if mb is None else f'{mb / 1e6:.2f}'} | {seconds} |"
        )
    if "ingest" in result:
        lines += ["", f"Level-0 ingest: {result['ingest']['seconds']} s."]
    return "\n".join(lines) + "\n"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--questions-per-doc", type=int, default=5)
    parser.add_argument("--sizes", default="32", help="documents per compacted shard, a list")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument(
        "--shards-per-question",
        default="1",
        help="level0 phase: answer with each question's top k shards, a list (1,2,3)",
    )
    parser.add_argument("--config", default="{}", help="MemoryConfig fields as JSON")
    parser.add_argument(
        "--compaction", default="{}", help="CompactionConfig fields as JSON, for every size"
    )
    parser.add_argument(
        "--variants",
        default='{"": {}}',
        help="named CompactionConfig overrides as JSON, each compacted at every size: "
        '\'{"b8": {"batch_size": 8}, "bf16": {"adapter_dtype": "bfloat16"}}\'',
    )
    parser.add_argument("--memory", type=Path, help="folder for the memories (default: OUT)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.shards_per_question = [int(k) for k in args.shards_per_question.split(",")]
    args.phases = [p.strip() for p in args.phases.split(",")]
    args.memory = args.memory or args.out
    common_overrides = json.loads(args.compaction)
    args.variants = {
        name: {**common_overrides, **overrides}
        for name, overrides in json.loads(args.variants).items()
    }
    return args


if __name__ == "__main__":
    main()
