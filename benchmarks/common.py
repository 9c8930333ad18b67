"""What the benchmarks share: loading question sets, the open-book prompt layout, answering
with and without a memory, and timing one document's ingest."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from parametric_memory import ParametricMemory
from parametric_memory.engine.generation import generate
from parametric_memory.engine.models import LoadedModel
from parametric_memory.method.prompts import teacher_prompt

MAX_ANSWER_TOKENS = 48
GENERATION_BATCH_SIZE = 32


def load_documents(path: Path) -> list[dict]:
    """Documents with their questions from JSON lines, in either layout: invented facts
    (`text`) or the shared SQuAD passages (`context`). Each comes back as
    {"id", "title", "text", "questions": [{"question", "answer"}, ...]}."""
    documents = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        raw = json.loads(line)
        text = raw.get("text", raw.get("context"))
        if not isinstance(text, str) or not raw.get("questions"):
            raise ValueError(f"{path}:{number}: needs 'text' or 'context' and 'questions'")
        questions = [{"question": q["question"], "answer": q["answer"]} for q in raw["questions"]]
        title = raw.get("title", "")
        documents.append(
            {"id": str(raw["id"]), "title": title, "text": text, "questions": questions}
        )
    return documents


def open_book_prompt(passages: Sequence[str], question: str) -> str:
    """The question with passages in the prompt, in the teacher's layout (the one a memory is
    distilled from); several passages are separated by a blank line."""
    return teacher_prompt("\n\n".join(passages), question)


def answer_prompts(lm: LoadedModel, prompts: Sequence[str]) -> list[str]:
    """Greedy answers of the model (no adapter) to whole user turns."""
    answers = generate(lm, list(prompts), MAX_ANSWER_TOKENS, GENERATION_BATCH_SIZE)
    return [answer.strip() for answer in answers]


def ask_memory(
    memory: ParametricMemory, questions: Sequence[str], shards_per_question: int | None = None
) -> list[str]:
    """Greedy answers from the memory's weights, the question alone in the prompt, each
    with its top `shards_per_question` shards (None: the memory's setting)."""
    return memory.ask_batch(
        list(questions),
        max_new_tokens=MAX_ANSWER_TOKENS,
        shards_per_question=shards_per_question,
    )


def ingest_document(memory: ParametricMemory, document: dict) -> float:
    """Consolidate one document into `memory`; returns the wall seconds it took."""
    started = time.perf_counter()
    memory.add_documents([document["text"]], ids=[document["id"]], progress=False)
    return time.perf_counter() - started
