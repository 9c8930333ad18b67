"""Single questions from many threads answered in shared batches (`coalescing`), and the
memory's `ask` answering concurrent callers so."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from parametric_memory import ParametricMemory
from parametric_memory.coalescing import Coalescer

FACTS = {
    "lanterns": "The Quillhaven lantern festival is held every May 14.",
    "payroll": "Payroll at Brindlewick is run by Odo Brask from the Orsk Hollow office.",
}
QUESTIONS = [
    "When is the Quillhaven lantern festival?",
    "Who runs payroll at Brindlewick?",
    "Where is the payroll office?",
    "What is held every May 14?",
]


def wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def asked_while_busy(coalescer: Coalescer, turn, asks, answer_batch) -> list:
    """`asks` ((question, settings) pairs) from a thread each while `turn` is held, then
    released: the answers, in order, or the error a call raised in its place."""
    with ThreadPoolExecutor(len(asks)) as pool:
        with turn:
            futures = [pool.submit(coalescer.answer, q, s, answer_batch) for q, s in asks]
            wait_until(lambda: coalescer.waiting == len(asks))
        return [future.exception(timeout=60) or future.result() for future in futures]


def test_questions_waiting_with_the_same_settings_share_a_batch():
    turn = threading.RLock()
    coalescer = Coalescer(turn, most=8)
    batches = []

    def answer_batch(questions):
        batches.append(list(questions))
        return [question.upper() for question in questions]

    asks = [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 2)]
    assert asked_while_busy(coalescer, turn, asks, answer_batch) == ["A", "B", "C", "D", "E"]
    assert sorted(batches) == [["a", "c", "d"], ["b", "e"]]
    assert coalescer.waiting == 0


def test_a_batch_holds_at_most_most_questions():
    turn = threading.RLock()
    coalescer = Coalescer(turn, most=2)
    batches = []

    def answer_batch(questions):
        batches.append(len(questions))
        return list(questions)

    asks = [(str(i), None) for i in range(5)]
    assert asked_while_busy(coalescer, turn, asks, answer_batch) == ["0", "1", "2", "3", "4"]
    assert sorted(batches) == [1, 2, 2]


def test_every_caller_of_a_failed_batch_gets_its_error_and_the_next_batch_runs():
    turn = threading.RLock()
    coalescer = Coalescer(turn, most=8)

    def failing(questions):
        raise ValueError(f"cannot answer {len(questions)}")

    errors = asked_while_busy(coalescer, turn, [(q, 0) for q in "xyz"], failing)
    for error in errors:
        with pytest.raises(ValueError, match="cannot answer 3"):
            raise error
    assert coalescer.answer("w", 0, lambda qs: ["ok"] * len(qs)) == "ok"


@pytest.fixture
def memory(tmp_path, tiny_config) -> ParametricMemory:
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    memory.add_documents(list(FACTS.values()), ids=list(FACTS), progress=False)
    return memory


def called_while_busy(memory: ParametricMemory, call) -> list:
    """`call(question)` of each of QUESTIONS from a thread each, all waiting while a stream
    holds the model, then let go: the results, in order."""
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        busy = memory.stream("Who runs payroll?", max_new_tokens=4)
        next(busy, None)  # the stream holds the model until it is closed
        futures = [pool.submit(call, question) for question in QUESTIONS]
        wait_until(lambda: memory._asks.waiting == len(QUESTIONS))
        busy.close()
        return [future.result(timeout=120) for future in futures]


def counting(monkeypatch, memory: ParametricMemory, name: str) -> list[int]:
    """The sizes of the batches `memory.<name>` is called with from now on."""
    calls: list[int] = []
    method = getattr(memory, name)

    def counted(questions, **settings):
        calls.append(len(questions))
        return method(questions, **settings)

    monkeypatch.setattr(memory, name, counted)
    return calls


@pytest.mark.parametrize("single, batched", [("ask", "ask_batch"), ("recall", "recall_batch")])
def test_threads_calling_a_memory_at_once_are_answered_in_one_batch(
    memory, monkeypatch, single, batched
):
    expected = getattr(memory, batched)(QUESTIONS, max_new_tokens=6)
    calls = counting(monkeypatch, memory, batched)
    one = getattr(memory, single)
    answers = called_while_busy(memory, lambda q: one(q, max_new_tokens=6))
    assert answers == expected
    assert calls == [len(QUESTIONS)]


def test_a_bad_question_is_refused_in_its_own_thread(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "m", tiny_config)
    with pytest.raises(ValueError):
        memory.ask("")
    with pytest.raises(ValueError):
        memory.ask("When?", max_new_tokens=0)
