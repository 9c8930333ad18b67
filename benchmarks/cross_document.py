"""Questions whose answer needs two documents (issue 26): `benchmarks/data/cross_document.jsonl`
holds invented pairs (A names a thing, B says what the question asks of it). Every document
goes into one memory (a shard each); each question is answered from the memory with its top
1, 2 and 3 shards and by self-routing, and by the same model with both passages, with one
of them, or with none in its prompt.

    python benchmarks/cross_document.py --memory /tmp/cross --out benchmarks/results/scratch/cross
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from common import MAX_ANSWER_TOKENS, answer_prompts, open_book_prompt
from metrics import estimate, percent, score_answer

from parametric_memory import MemoryConfig, ParametricMemory
from parametric_memory.engine.models import load_model

DATA = Path(__file__).parent / "data" / "cross_document.jsonl"
log = logging.getLogger("cross_document")


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pairs = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    memory = ingested(pairs, args.memory, MemoryConfig.model_validate(json.loads(args.config)))
    questions = [pair["question"] for pair in pairs]
    answers: dict[str, list[str]] = {}
    for k in (1, 2, 3):
        answers[f"memory top{k}"] = memory.ask_batch(
            questions, max_new_tokens=MAX_ANSWER_TOKENS, shards_per_question=k
        )
    answers["memory confidence"] = memory.ask_batch(
        questions, max_new_tokens=MAX_ANSWER_TOKENS, selection="confidence"
    )
    answers.update(prompt_answers(memory.config, pairs))
    rows = {mode: row(pairs, given) for mode, given in answers.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cross_document.json").write_text(
        json.dumps({"rows": rows, "answers": answers}, indent=1, ensure_ascii=False)
    )
    (args.out / "cross_document.md").write_text(render_markdown(rows, len(pairs)))
    print(render_markdown(rows, len(pairs)))


def ingested(pairs: list[dict], folder: Path, config: MemoryConfig) -> ParametricMemory:
    """Every document of every pair in one memory (an existing one is reused: adding known
    documents again is a no-op)."""
    memory = ParametricMemory.create(folder, config, exist_ok=True)
    documents = [document for pair in pairs for document in pair["documents"]]
    started = time.perf_counter()
    memory.add_documents([d["text"] for d in documents], ids=[d["id"] for d in documents])
    log.info("ingested %d documents in %.1fs", len(documents), time.perf_counter() - started)
    return memory


def prompt_answers(config: MemoryConfig, pairs: list[dict]) -> dict[str, list[str]]:
    """The base model with both passages, with the first or the second alone, or with none."""
    lm = load_model(config)
    texts = [[d["text"] for d in pair["documents"]] for pair in pairs]
    prompts = {
        "both passages in prompt": [
            open_book_prompt(t, p["question"]) for t, p in zip(texts, pairs, strict=True)
        ],
        "first passage only": [
            open_book_prompt(t[:1], p["question"]) for t, p in zip(texts, pairs, strict=True)
        ],
        "second passage only": [
            open_book_prompt(t[1:], p["question"]) for t, p in zip(texts, pairs, strict=True)
        ],
        "base": [pair["question"] for pair in pairs],
    }
    return {mode: answer_prompts(lm, given) for mode, given in prompts.items()}


def row(pairs: list[dict], answers: list[str]) -> dict:
    scores = [score_answer(a, p["answer"]) for a, p in zip(answers, pairs, strict=True)]
    return {
        "contains": estimate([s["contains"] for s in scores]),
        "f1": estimate([s["f1"] for s in scores]),
    }


def render_markdown(rows: dict[str, dict], questions: int) -> str:
    lines = [
        f"Cross-document questions ({questions}, each needing two documents)",
        "",
        "| mode | contains gold [95% CI] | F1 |",
        "|---|---|---|",
    ]
    for mode, result in rows.items():
        lines.append(f"| {mode} | {percent(result['contains'], 0)} | {result['f1']['mean']:.3f} |")
    return "\n".join(lines) + "\n"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--memory", type=Path, required=True, help="memory folder (reused)")
    parser.add_argument("--config", default="{}", help="MemoryConfig overrides, JSON")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    main()
