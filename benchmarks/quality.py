"""Quality at scale: memory against passage-in-prompt and BM25 RAG, and the stream's forgetting.

N passages sampled with a seed, their questions (at most --questions-per-doc, the first ones
in the file), the same model, greedy decoding; rows measured side by side:
  base       — the question alone (floor)
  in-prompt  — the gold passage in the prompt (target; the layout a memory is distilled from)
  rag        — the BM25 top-3 of the N passages in the prompt (plus BM25's top-1/top-3 hit rate)
  doc        — a fresh memory per passage, then its questions, nothing in the prompt
  stream     — the N passages added to ONE memory in order; at each checkpoint the questions of
               every passage held so far (forgetting curve), at the end accuracy by ingest age
Metrics: answer contains the gold span and SQuAD token F1 (both SQuAD-normalised), with 95%
bootstrap intervals over questions; ingest seconds/document, document tokens/s, adapter bytes.

    python benchmarks/quality.py --n 10 --label n10
    python benchmarks/quality.py --data benchmarks/data/invented_facts.jsonl --n 20

`--part I/K` runs every K-th passage (from the I-th) of the splittable modes, so K processes
can share one GPU; the stream runs in a process of its own (`--stream-memory` makes it
resumable); `--merge` joins the parts' folders (one folder alone: redraws its outputs):

    S=benchmarks/results/scratch/q100    # gitignored
    for i in 0 1 2 3; do python benchmarks/quality.py --n 100 --modes base,in-prompt,rag,doc \\
        --part $i/4 --out $S/part$i & done
    python benchmarks/quality.py --n 100 --modes stream --stream-memory $S/memory --out $S/stream
    wait; python benchmarks/quality.py --merge $S/part* $S/stream --label n100
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from common import answer_prompts, ask_memory, ingest_document, load_documents, open_book_prompt
from metrics import estimate, score_answer
from pydantic import ValidationError
from retrieval import rank_passages

from parametric_memory import MemoryConfig, ParametricMemory
from parametric_memory.engine.models import load_model

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "data" / "squad-dev.jsonl"
RESULTS = REPO / "benchmarks" / "results" / "quality"
MODES = ("base", "in-prompt", "rag", "doc", "stream")
PROMPT_MODES = ("base", "in-prompt", "rag")
ROW_NAMES = {
    "base": "base (question alone)",
    "in-prompt": "in-prompt (gold passage)",
    "rag": "rag (BM25 top-3 in prompt)",
    "doc": "memory/doc (one memory per passage)",
    "stream": "memory/stream (all N in one memory)",
}
RAG_TOP_K = 3
CHECKPOINTS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
QUESTIONS_PER_DOC = 5
log = logging.getLogger("quality")


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    log.setLevel(logging.INFO)
    # `timeout`/kill send SIGTERM: exit through the `finally` that deletes the scratch memories
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = merge_runs(args.merge) if args.merge else run(args)
    result["label"] = args.label
    summarise(result)
    write_outputs(result, args.out or RESULTS / args.label)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SQUAD, help="JSON lines (SQuAD or invented)")
    parser.add_argument("--n", type=int, default=10, help="passages sampled")
    parser.add_argument("--seed", type=int, default=0, help="seed of the passage sample")
    parser.add_argument(
        "--questions-per-doc",
        type=int,
        default=QUESTIONS_PER_DOC,
        help="first questions kept per passage (SQuAD has 5.4 on average; 0 = all)",
    )
    parser.add_argument("--modes", default=",".join(MODES), help=f"any of {','.join(MODES)}")
    parser.add_argument("--model", help="base model (default: the config's, i.e. 'default')")
    parser.add_argument("--device", help="torch device (default: the config's, i.e. 'auto')")
    parser.add_argument("--config", default="{}", help="MemoryConfig as JSON, or a JSON file")
    parser.add_argument("--checkpoints", help="documents held when the stream is evaluated")
    parser.add_argument(
        "--stream-memory",
        type=Path,
        help="keep the stream's memory here (gitignored or outside the tree) and carry on "
        "from where an interrupted run on it stopped (default: a temp dir, deleted)",
    )
    parser.add_argument("--age-bins", type=int, default=5, help="ingest-age bins (5: quintiles)")
    parser.add_argument("--part", type=_part, default=(0, 1), help="I/K: every K-th passage")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="DIR", help="join these runs")
    parser.add_argument("--label", default="default", help="names the run")
    parser.add_argument("--out", type=Path, help=f"output folder (default {RESULTS}/LABEL)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if not args.merge:
        args.modes = _modes(parser, args.modes, args.part)
        args.memory_config = parse_memory_config(parser, args.config, args.model, args.device)
    return args


def _part(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= I < K, got {text!r}")
    return index, count


def _modes(parser: argparse.ArgumentParser, text: str, part: tuple[int, int]) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}; choose from {','.join(MODES)}")
    if "stream" in modes and part[1] > 1:
        parser.error("the stream cannot be split: run --modes stream without --part")
    return [m for m in MODES if m in modes]


def parse_memory_config(
    parser: argparse.ArgumentParser, text: str, model: str | None, device: str | None
) -> MemoryConfig:
    """The user's JSON through MemoryConfig.model_validate; --model/--device override it."""
    try:
        fields = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
        overrides = {"model": model, "device": device}
        fields.update({key: value for key, value in overrides.items() if value is not None})
        return MemoryConfig.model_validate(fields)
    except (OSError, ValueError, ValidationError) as error:
        parser.error(f"--config: {error}")


# --- one run ------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    started = time.time()
    documents = sample_documents(
        load_documents(args.data), args.n, args.seed, args.questions_per_doc
    )
    setup = _setup(args, documents)
    part, parts = args.part
    mine = list(range(part, len(documents), parts))
    config: MemoryConfig = args.memory_config
    records: dict[str, list[dict]] = {}
    ingested: dict[str, list[dict]] = {}
    curve: list[dict] = []
    if set(args.modes) & set(PROMPT_MODES):
        records.update(answer_from_prompts(documents, mine, config, args.modes))
    scratch = Path(tempfile.mkdtemp(prefix="pm-quality-"))
    try:
        if "doc" in args.modes:
            records["doc"], ingested["doc"] = memory_per_document(documents, mine, config, scratch)
        if "stream" in args.modes:
            folder = args.stream_memory or scratch / "stream"
            records["stream"], ingested["stream"], curve = memory_streamed(
                documents, config, folder, setup["checkpoints"]
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "setup": setup,
        "records": records,
        "ingest": ingested,
        "curve_records": curve,
        "runs": [_run_info(args, started)],
    }


def sample_documents(
    documents: list[dict], n: int, seed: int, questions_per_doc: int
) -> list[dict]:
    """The first N of the documents shuffled by `random.Random(seed)`, in that (= ingest)
    order, each with its first `questions_per_doc` questions (all if 0). A smaller N takes a
    prefix of a larger N's sample, so a short stream is the start of a longer one."""
    if not 1 <= n <= len(documents):
        raise SystemExit(f"--n must be between 1 and {len(documents)}, got {n}")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    cap = questions_per_doc or None
    return [{**documents[i], "questions": documents[i]["questions"][:cap]} for i in order[:n]]


def _setup(args: argparse.Namespace, documents: list[dict]) -> dict:
    """What two runs must share to be merged (the data path aside)."""
    return {
        "data": str(args.data),
        "n": len(documents),
        "seed": args.seed,
        "questions_per_doc": args.questions_per_doc,
        "questions": sum(len(d["questions"]) for d in documents),
        "document_ids": [d["id"] for d in documents],
        "checkpoints": _checkpoints(args.checkpoints, len(documents)),
        "age_bins": min(args.age_bins, len(documents)),
        "config": json.loads(args.memory_config.model_dump_json()),
    }


def _checkpoints(text: str | None, n: int) -> list[int]:
    wanted = [int(x) for x in text.split(",")] if text else list(CHECKPOINTS)
    return sorted({c for c in wanted if 1 <= c < n} | {n})


def questions_of(documents: list[dict], indices: Iterable[int]) -> list[tuple[int, int, dict]]:
    """(document index, question index, question) for the documents at `indices`."""
    return [(i, j, q) for i in indices for j, q in enumerate(documents[i]["questions"])]


def score_records(
    documents: list[dict], questions: list[tuple[int, int, dict]], answers: list[str]
) -> list[dict]:
    return [
        {
            "doc_index": i,
            "doc_id": documents[i]["id"],
            "question_index": j,
            "question": q["question"],
            "gold": q["answer"],
            "answer": answer,
            **score_answer(answer, q["answer"]),
        }
        for (i, j, q), answer in zip(questions, answers, strict=True)
    ]


# --- rows without a memory ------------------------------------------------------------------
def answer_from_prompts(
    documents: list[dict], indices: list[int], config: MemoryConfig, modes: list[str]
) -> dict[str, list[dict]]:
    """base, in-prompt and rag records for the questions of the documents at `indices`; rag
    retrieves among all N documents."""
    questions = questions_of(documents, indices)
    texts = [q["question"] for _, _, q in questions]
    prompts: dict[str, list[str]] = {}
    if "base" in modes:
        prompts["base"] = texts
    if "in-prompt" in modes:
        prompts["in-prompt"] = [
            open_book_prompt([documents[i]["text"]], q["question"]) for i, _, q in questions
        ]
    retrieved: list[list[int]] = []
    if "rag" in modes:
        retrieved = rank_passages([d["text"] for d in documents], texts, RAG_TOP_K)
        prompts["rag"] = [
            open_book_prompt([documents[k]["text"] for k in top], question)
            for top, question in zip(retrieved, texts, strict=True)
        ]
    lm = load_model(config)
    records = {
        m: score_records(documents, questions, answer_prompts(lm, p)) for m, p in prompts.items()
    }
    for record, top in zip(records.get("rag", []), retrieved, strict=True):
        record["retrieved"] = top
    log.info("answered %d questions without a memory: %s", len(texts), ",".join(prompts))
    return records


# --- rows with a memory ---------------------------------------------------------------------
def memory_per_document(
    documents: list[dict], indices: list[int], config: MemoryConfig, scratch: Path
) -> tuple[list[dict], list[dict]]:
    """A fresh memory per document, then its questions; the memory is deleted after."""
    records, ingested = [], []
    for count, index in enumerate(indices, 1):
        folder = scratch / f"doc-{index}"
        memory = ParametricMemory.create(folder, config)
        ingested.append(_ingest(memory, documents, index))
        questions = questions_of(documents, [index])
        answers = ask_memory(memory, [q["question"] for _, _, q in questions])
        records += score_records(documents, questions, answers)
        del memory
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the cached blocks back to the other parts' processes
        shutil.rmtree(folder, ignore_errors=True)
        log.info("memory/doc %d/%d %.1fs", count, len(indices), ingested[-1]["seconds"])
    return records, ingested


def memory_streamed(
    documents: list[dict], config: MemoryConfig, folder: Path, checkpoints: list[int]
) -> tuple[list[dict], list[dict], list[dict]]:
    """All documents into one memory at `folder`, one `add_documents` call each; at each
    checkpoint the questions of every document held so far. Returns the final records (the
    last checkpoint's), the ingest log and the checkpoint records. Progress is saved beside
    the memory after every step, so a run on the same folder carries on where one stopped."""
    memory = ParametricMemory.create(folder, config, exist_ok=True)
    progress_file = folder.parent / f"{folder.name}.progress.json"
    progress = _stream_progress(progress_file, memory, config, documents)
    ingested, curve = progress["ingested"], progress["curve"]
    evaluated = {record["held"] for record in curve}
    for held in range(len(ingested), len(documents) + 1):
        if held > len(ingested):
            ingested.append(_ingest(memory, documents, held - 1))
            _save_json(progress_file, progress)
            log.info("memory/stream %d/%d %.1fs", held, len(documents), ingested[-1]["seconds"])
        if held in checkpoints and held not in evaluated:
            curve += _checkpoint(memory, documents, held)
            evaluated.add(held)
            _save_json(progress_file, progress)
    last = len(documents)
    final = [{k: v for k, v in r.items() if k != "held"} for r in curve if r["held"] == last]
    return final, ingested, curve


def _checkpoint(memory: ParametricMemory, documents: list[dict], held: int) -> list[dict]:
    """Records of the questions of the first `held` documents, asked of the memory now."""
    questions = questions_of(documents, range(held))
    answers = ask_memory(memory, [q["question"] for _, _, q in questions])
    log.info("memory/stream checkpoint: %d passages held, %d questions", held, len(questions))
    return [{"held": held, **record} for record in score_records(documents, questions, answers)]


def _stream_progress(
    path: Path, memory: ParametricMemory, config: MemoryConfig, documents: list[dict]
) -> dict:
    """The saved progress of the stream in `memory` (nothing yet for a new memory), checked
    against the memory and this run's passages and config."""
    progress = json.loads(path.read_text()) if path.is_file() else {"ingested": [], "curve": []}
    done_ids = [item["doc_id"] for item in progress["ingested"]]
    same_config = memory.config.model_dump(exclude={"device"}) == config.model_dump(
        exclude={"device"}
    )
    if (
        not same_config
        or memory.info().documents != len(done_ids)
        or done_ids != [d["id"] for d in documents[: len(done_ids)]]
    ):
        raise SystemExit(
            f"{memory.root} ({memory.info().documents} documents, {len(done_ids)} in {path}) "
            "is not this run's stream so far: delete both or choose another --stream-memory"
        )
    if done_ids:
        log.warning("memory/stream: carrying on after %d passages in %s", len(done_ids), path)
    return progress


def _save_json(path: Path, value: object) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(value, ensure_ascii=False))
    os.replace(scratch, path)


def _ingest(memory: ParametricMemory, documents: list[dict], index: int) -> dict:
    tokens_before = memory.info().tokens
    seconds = ingest_document(memory, documents[index])
    info = memory.info()
    return {
        "doc_index": index,
        "doc_id": documents[index]["id"],
        "seconds": round(seconds, 3),
        "tokens": info.tokens - tokens_before,
        "adapter_bytes": info.adapter_bytes,
    }


def _run_info(args: argparse.Namespace, started: float) -> dict:
    cuda = torch.cuda.is_available()
    part, parts = args.part
    return {
        "part": f"{part}/{parts}",
        "modes": args.modes,
        "wall_seconds": round(time.time() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "machine": _machine(),
        "command": " ".join(sys.argv),
        "args": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
            if key != "memory_config"
        },
    }


def _machine() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else f"CPU {platform.machine()}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


# --- merging parts --------------------------------------------------------------------------
def merge_runs(paths: Sequence[Path]) -> dict:
    """One result from runs of one setup (their quality.json folders or files): records of
    each mode joined, each question measured once; every run's own record kept."""
    results = [_load_result(path) for path in paths]
    setup = results[0]["setup"]
    for path, result in zip(paths, results, strict=True):
        if _comparable(result["setup"]) != _comparable(setup):
            raise SystemExit(f"{path}: not the setup of {paths[0]} (passages, config, ...)")
    if sum(bool(result["curve_records"]) for result in results) > 1:
        raise SystemExit("more than one run has a stream: merge one stream run only")
    merged: dict = {"setup": setup, "records": {}, "ingest": {}, "curve_records": [], "runs": []}
    for result in results:
        for key in ("records", "ingest"):
            for mode, items in result[key].items():
                merged[key].setdefault(mode, []).extend(items)
        merged["curve_records"] += result["curve_records"]
        merged["runs"] += result["runs"]
    merged["records"] = {
        mode: sorted(merged["records"][mode], key=_question_key)
        for mode in MODES
        if mode in merged["records"]
    }
    _check_coverage(merged["records"], setup["n"])
    return merged


def _load_result(path: Path) -> dict:
    return json.loads((path / "quality.json" if path.is_dir() else path).read_text())


def _comparable(setup: dict) -> dict:
    """The setup less what may differ between parts: the data's path, the device, and the
    stream's checkpoints (only the one stream run evaluates them)."""
    config = {key: value for key, value in setup["config"].items() if key != "device"}
    varying = {"data", "checkpoints"}
    return {key: value for key, value in setup.items() if key not in varying} | {"config": config}


def _question_key(record: dict) -> tuple[int, int]:
    return record["doc_index"], record["question_index"]


def _check_coverage(records: dict[str, list[dict]], n: int) -> None:
    for mode, items in records.items():
        keys = [_question_key(record) for record in items]
        if len(keys) != len(set(keys)):
            raise SystemExit(f"{mode}: some questions were measured by two runs")
        covered = len({record["doc_index"] for record in items})
        if covered < n:
            log.warning("%s covers %d of %d passages: is a part missing?", mode, covered, n)


# --- metrics --------------------------------------------------------------------------------
def summarise(result: dict) -> None:
    """Add `rows` (metrics with 95% CIs), `forgetting_curve` and `age_curves` to a result."""
    setup = result["setup"]
    rows = {
        mode: _row(records, result["ingest"].get(mode, []))
        for mode, records in result["records"].items()
    }
    target = rows["in-prompt"]["contains"]["mean"] if "in-prompt" in rows else None
    for row in rows.values():
        share = row["contains"]["mean"] / target if target else None
        row["percent_of_in_prompt"] = None if share is None else round(100 * share, 1)
    result["rows"] = rows
    stream_ingest = result["ingest"].get("stream", [])
    result["forgetting_curve"] = _forgetting_curve(result["curve_records"], stream_ingest)
    result["age_curves"] = {
        mode: _age_curve(result["records"][mode], setup["n"], setup["age_bins"])
        for mode in ("stream", "doc")
        if mode in result["records"]
    }


def _estimates(records: list[dict]) -> dict:
    return {
        "questions": len(records),
        "contains": estimate([r["contains"] for r in records]),
        "f1": estimate([r["f1"] for r in records]),
    }


def _row(records: list[dict], ingested: list[dict]) -> dict:
    row = {"documents": len({r["doc_index"] for r in records}), **_estimates(records)}
    if records and "retrieved" in records[0]:
        row["bm25_top1"] = estimate([float(r["retrieved"][0] == r["doc_index"]) for r in records])
        row["bm25_top3"] = estimate([float(r["doc_index"] in r["retrieved"]) for r in records])
    if ingested:
        row["ingest"] = _ingest_summary(ingested)
    return row


def _ingest_summary(ingested: list[dict]) -> dict:
    """Wall seconds and document tokens per process; adapter bytes of the largest adapter
    (doc: one passage's memory; stream: the final one)."""
    seconds = sum(item["seconds"] for item in ingested)
    tokens = sum(item["tokens"] for item in ingested)
    return {
        "documents": len(ingested),
        "seconds": round(seconds, 1),
        "seconds_per_document": round(seconds / len(ingested), 2),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        "adapter_bytes": max(item["adapter_bytes"] for item in ingested),
    }


def _forgetting_curve(curve_records: list[dict], stream_ingest: list[dict]) -> list[dict]:
    """Accuracy on the questions of every document held, at each checkpoint."""
    by_held: dict[int, list[dict]] = {}
    for record in curve_records:
        by_held.setdefault(record["held"], []).append(record)
    adapter_bytes = {item["doc_index"] + 1: item["adapter_bytes"] for item in stream_ingest}
    return [
        {"held": held, **_estimates(records), "adapter_bytes": adapter_bytes.get(held)}
        for held, records in sorted(by_held.items())
    ]


def _age_curve(records: list[dict], n: int, bins: int) -> list[dict]:
    """Accuracy by ingest position in `bins` equal bins, the first-ingested (oldest) first."""
    curve = []
    for number in range(bins):
        first, stop = number * n // bins, (number + 1) * n // bins
        in_bin = [r for r in records if first <= r["doc_index"] < stop]
        curve.append({"bin": number, "positions": [first + 1, stop], **_estimates(in_bin)})
    return curve


# --- outputs --------------------------------------------------------------------------------
def write_outputs(result: dict, out: Path) -> None:
    """quality.json (summaries first, then the per-question records), quality.md, quality.png."""
    out.mkdir(parents=True, exist_ok=True)
    first = ("label", "setup", "rows", "forgetting_curve", "age_curves", "runs")
    ordered = {key: result[key] for key in first} | result
    (out / "quality.json").write_text(json.dumps(ordered, indent=1, ensure_ascii=False) + "\n")
    markdown = render_markdown(result)
    (out / "quality.md").write_text(markdown)
    plot(result, out / "quality.png")
    print(markdown)
    print(f"written to {out}/quality.{{json,md,png}}")


def render_markdown(result: dict) -> str:
    lines = [f"# Quality: {result['label']}", "", _description(result), ""]
    lines += _rows_table(result["rows"])
    if result["forgetting_curve"]:
        lines += ["", "## Forgetting curve (memory/stream, questions of every passage held)", ""]
        lines += _curve_table(result["forgetting_curve"])
    if result["age_curves"]:
        lines += ["", "## By document age (ingest position, first-ingested first)", ""]
        lines += _age_table(result["age_curves"])
    lines += ["", "## Runs", ""] + [_run_line(run) for run in result["runs"]]
    return "\n".join(lines) + "\n"


def _description(result: dict) -> str:
    setup = result["setup"]
    return (
        f"{setup['n']} passages of `{Path(setup['data']).name}` (seed {setup['seed']}), "
        f"{setup['questions']} questions ({_question_cap(setup['questions_per_doc'])} "
        f"per passage), model `{setup['config']['model']}`, greedy decoding. Contains = the "
        "answer contains the gold span, F1 = token F1, both SQuAD-normalised; [95% bootstrap "
        "interval over questions]. s/doc and tokens/s: ingest wall time per process "
        f"({len(result['runs'])} run(s), see below)."
    )


def _question_cap(questions_per_doc: int) -> str:
    return f"at most the first {questions_per_doc}" if questions_per_doc else "all"


def _rows_table(rows: dict) -> list[str]:
    lines = [
        "| row | contains gold [95% CI] | token F1 [95% CI] | % of in-prompt | s/doc "
        "| tokens/s | adapter bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, row in rows.items():
        ingest = row.get("ingest", {})
        share = row["percent_of_in_prompt"]
        cells = [
            ROW_NAMES[mode],
            _percent(row["contains"]),
            _decimal(row["f1"]),
            "" if share is None else f"{share:.0f}%",
            str(ingest.get("seconds_per_document", "")),
            str(ingest.get("tokens_per_second", "")),
            f"{ingest['adapter_bytes']:,}" if ingest else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if "rag" in rows:
        top1, top3 = _percent(rows["rag"]["bm25_top1"]), _percent(rows["rag"]["bm25_top3"])
        lines += ["", f"BM25 ranks the gold passage first for {top1}, in the top 3 for {top3}."]
    return lines


def _curve_table(curve: list[dict]) -> list[str]:
    lines = [
        "| passages held | questions | contains gold [95% CI] | token F1 [95% CI] "
        "| adapter bytes |",
        "|---|---|---|---|---|",
    ]
    for point in curve:
        size = f"{point['adapter_bytes']:,}" if point["adapter_bytes"] is not None else ""
        lines.append(
            f"| {point['held']} | {point['questions']} | {_percent(point['contains'])} "
            f"| {_decimal(point['f1'])} | {size} |"
        )
    return lines


def _age_table(age_curves: dict[str, list[dict]]) -> list[str]:
    modes = list(age_curves)
    header = " | ".join(
        f"{ROW_NAMES[m].split()[0]} contains | {ROW_NAMES[m].split()[0]} F1" for m in modes
    )
    lines = [f"| ingest positions | {header} |", "|---|" + "---|---|" * len(modes)]
    for bins in zip(*age_curves.values(), strict=True):
        cells = [f"{_percent(b['contains'])} | {_decimal(b['f1'])}" for b in bins]
        lines.append(f"| {_positions(bins[0])} | " + " | ".join(cells) + " |")
    return lines


def _positions(age_bin: dict) -> str:
    first, last = age_bin["positions"]
    return str(first) if first == last else f"{first}–{last}"


def _run_line(run: dict) -> str:
    gpu = f", peak GPU {run['peak_gpu_mb']:,} MB" if run["peak_gpu_mb"] is not None else ""
    return (
        f"- part {run['part']}, {','.join(run['modes'])}: {run['wall_seconds']} s on "
        f"{run['machine']['device']} (torch {run['machine']['torch']}, "
        f"{run['machine']['cpu_count']} CPUs), peak RSS {run['peak_rss_mb']:,} MB{gpu}"
    )


def _percent(value: dict) -> str:
    low, high = value["ci95"]
    return f"{100 * value['mean']:.1f}% [{100 * low:.1f}–{100 * high:.1f}]"


def _decimal(value: dict) -> str:
    low, high = value["ci95"]
    return f"{value['mean']:.3f} [{low:.3f}–{high:.3f}]"


# --- figure ---------------------------------------------------------------------------------
COLOURS = {
    "in-prompt": "tab:green",
    "rag": "tab:purple",
    "doc": "tab:orange",
    "base": "tab:gray",
    "stream": "tab:blue",
}


def plot(result: dict, path: Path) -> None:
    """Left: accuracy vs passages held (stream), the other rows as reference lines. Right:
    accuracy by ingest position, stream and (as a control) doc."""
    try:
        import matplotlib
    except ImportError:  # a GPU machine may lack it: the JSON re-renders elsewhere
        log.warning("no matplotlib, no %s: redraw it with --merge %s", path.name, path.parent)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (held_axis, age_axis) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    _plot_forgetting(held_axis, result)
    _plot_age(age_axis, result["age_curves"])
    figure.suptitle(f"{result['label']}: {result['setup']['n']} passages, answer contains gold")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_forgetting(axis, result: dict) -> None:
    curve = result["forgetting_curve"]
    if curve:
        held = [point["held"] for point in curve]
        axis.errorbar(
            held,
            *_with_errors(curve),
            color=COLOURS["stream"],
            marker="o",
            capsize=3,
            label=ROW_NAMES["stream"],
        )
        axis.set_xscale("log" if max(held) >= 10 else "linear")
        axis.set_xticks(held, [str(h) for h in held])
        axis.minorticks_off()
    for mode in ("in-prompt", "rag", "doc", "base"):
        if mode in result["rows"]:
            level = 100 * result["rows"][mode]["contains"]["mean"]
            axis.axhline(level, color=COLOURS[mode], linestyle="--", label=ROW_NAMES[mode])
    axis.set_xlabel("passages held by the memory")
    axis.set_ylabel("answer contains gold (%)")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)


def _plot_age(axis, age_curves: dict[str, list[dict]]) -> None:
    for mode, curve in age_curves.items():
        labels = [_positions(age_bin) for age_bin in curve]
        axis.errorbar(
            labels,
            *_with_errors(curve),
            color=COLOURS[mode],
            marker="o",
            capsize=3,
            label=ROW_NAMES[mode],
        )
    axis.set_xlabel("ingest position (first-ingested left)")
    if age_curves:
        axis.legend(fontsize=8)


def _with_errors(points: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Means in % and their asymmetric error bars, from points with a `contains` estimate."""
    means = [100 * p["contains"]["mean"] for p in points]
    lows = [m - 100 * p["contains"]["ci95"][0] for m, p in zip(means, points, strict=True)]
    highs = [100 * p["contains"]["ci95"][1] - m for m, p in zip(means, points, strict=True)]
    return means, [lows, highs]


if __name__ == "__main__":
    main()
