"""Questions from many threads at once (issue 26): each thread calls `ParametricMemory.ask`
with one question, as LangChain's `batch`, async integrations and servers do. Timed against
the same questions asked one after another (what such callers got while each ask waited
its turn alone) and as one `ask_batch` call, on one memory.

    python benchmarks/concurrent_asks.py --memory MEMORY --out benchmarks/results/scratch/asks
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import MAX_ANSWER_TOKENS

from parametric_memory import ParametricMemory

QUESTIONS = Path(__file__).parent / "data" / "cross_document.jsonl"


def main() -> None:
    args = _parse_args()
    lines = args.questions.read_text().splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()]
    memory = ParametricMemory.open(args.memory)
    memory.ask(questions[0], max_new_tokens=MAX_ANSWER_TOKENS)  # model and shards warm
    rows = {
        "one after another": timed(lambda: [ask(memory, q) for q in questions]),
        f"{len(questions)} threads at once": timed(lambda: asked_at_once(memory, questions)),
        "one ask_batch call": timed(
            lambda: memory.ask_batch(questions, max_new_tokens=MAX_ANSWER_TOKENS)
        ),
    }
    answers = [row.pop("answers") for row in rows.values()]
    result = {
        "memory": str(args.memory),
        "questions": len(questions),
        "same_answers": all(a == answers[-1] for a in answers),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrent_asks.json").write_text(json.dumps(result, indent=1))
    (args.out / "concurrent_asks.md").write_text(render_markdown(result))
    print(render_markdown(result))


def ask(memory: ParametricMemory, question: str) -> str:
    return memory.ask(question, max_new_tokens=MAX_ANSWER_TOKENS)


def asked_at_once(memory: ParametricMemory, questions: list[str]) -> list[str]:
    """Each question asked by a thread of its own, all started together."""
    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(lambda q: ask(memory, q), questions))


def timed(run: Callable[[], list[str]]) -> dict:
    started = time.perf_counter()
    answers = run()
    return {"seconds": round(time.perf_counter() - started, 2), "answers": answers}


def render_markdown(result: dict) -> str:
    lines = [
        f"{result['questions']} questions, memory `{result['memory']}`; the same answers "
        f"every way: {result['same_answers']}",
        "",
        "| how they were asked | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {row['seconds']} |" for name, row in result["rows"].items()]
    return "\n".join(lines) + "\n"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", type=Path, required=True)
    parser.add_argument(
        "--questions", type=Path, default=QUESTIONS, help="JSONL, a 'question' each"
    )
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    main()
