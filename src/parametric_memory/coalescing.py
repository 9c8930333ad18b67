"""One-question calls from many threads answered in shared batches.

A memory answers a batch of 64 questions in about the time of a few single ones (each row
with its own shard's weights), but LangChain's `batch`/`abatch`, async integrations and
servers send questions one call per thread. The calls queue for the one model anyway; here
whichever caller gets the model next answers every question waiting with the same
settings in one batch, and hands each waiting caller its own answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
AnswerBatch = Callable[[Sequence[str]], list[T]]
"""Answers to questions asked with one set of settings, in order."""
GATHER_S = 0.005
"""How long a question that finds the model free and no other question waiting waits for
company: callers started together (a thread pool's `map`) reach the queue milliseconds
apart, and the first would otherwise be answered alone."""


@dataclass(eq=False)
class _Ask:
    question: str
    settings: Hashable
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None
    error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.answer


class Coalescer:
    """Single questions answered together while they wait for `turn` (the lock that lets
    one caller at a time use the model), at most `most` a batch."""

    def __init__(self, turn: threading.RLock, most: int) -> None:
        self._turn = turn
        self._most = most
        self._waiting: list[_Ask] = []
        self._guard = threading.Lock()

    @property
    def waiting(self) -> int:
        """Questions waiting for their turn."""
        with self._guard:
            return len(self._waiting)

    def answer(self, question: str, settings: Hashable, answer_batch: AnswerBatch[T]) -> T:
        """The answer to `question`, from a batch of every question waiting with the same
        `settings` (`answer_batch` answers them: the same settings, the same function);
        its error if that batch failed."""
        ask = _Ask(question, settings)
        with self._guard:
            self._waiting.append(ask)
        with self._turn:
            if self.waiting == 1:
                time.sleep(GATHER_S)
            while not ask.done.is_set():
                self._answer_waiting(settings, answer_batch)
        return ask.result()

    def _answer_waiting(self, settings: Hashable, answer_batch: AnswerBatch[Any]) -> None:
        with self._guard:
            batch = [ask for ask in self._waiting if ask.settings == settings][: self._most]
            self._waiting = [ask for ask in self._waiting if ask not in batch]
        try:
            answers = answer_batch([ask.question for ask in batch])
        except BaseException as error:  # each caller of the batch sees why it failed
            for ask in batch:
                ask.error = error
                ask.done.set()
            return
        for ask, text in zip(batch, answers, strict=True):
            ask.answer = text
            ask.done.set()
