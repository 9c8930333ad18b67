"""The ingest's progress bar: one bar over a call's chunks that moves within a document as
its stages report (elicit, teacher/select, each training step), with the stage in words and
an ETA. On a terminal it redraws in place; elsewhere (a file, a pipe) it writes a plain line
when a document starts, at most every 30 s within one, and at the end: no `\\r` frames."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm.auto import tqdm

from .engine.models import LoadedModel

_STAGE_SHARES = {"elicit": 0.2, "teacher": 0.1, "consolidate": 0.7}
"""Rough shares of a transformation's time, by which the bar advances over its chunks: on an
H100, 128 documents together took 25% eliciting, 5-7% on teacher targets and selection, and
70% consolidating (`benchmarks/results/compaction/h100-n300/ingest-and-level0.log`)."""
_LINE_SECONDS = 30.0
"""Where stderr is not a terminal, the bar is a plain line when a document starts, at most
this often within one, and at the end: never a `\\r` frame, which a log or a pipe keeps as one
more line each."""
_METER = "{documents} [{elapsed}<{remaining}, {n:.1f}/{total:.0f} chunks{postfix}] "
_LIVE_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| " + _METER + "{stage:<26}"  # the bar holds still
_LINE_FORMAT = "{desc}: {percentage:3.0f}% | " + _METER + "{stage}"
"""Documents done/all just after a `|`, and the document under way last in the brackets, as
on the bar of documents before chunks were counted: `benchmarks/crash_harness.py` reads them
from the CLI's `--progress` output."""


class _Meter(tqdm):
    """tqdm with two fields of the ingest's own: `documents` ("done/all") and `stage`."""

    def __init__(self, documents: str, **options: object) -> None:
        self.documents, self.stage = documents, ""
        super().__init__(**options)

    @property
    def format_dict(self) -> dict:
        return {**super().format_dict, "documents": self.documents, "stage": self.stage}


class IngestBar:
    """An ingest's progress: the chunks of its call, each transformation's advanced stage by
    stage as the model reports (this is the model's `progress`: elicit, then the teacher's
    targets and selection, then each training step), so a long document moves, with an ETA;
    and the documents committed. Drawn in place on a terminal (a widget in a notebook);
    elsewhere printed as plain lines (`_LINE_SECONDS`); nothing at all unless `show`."""

    def __init__(self, chunks: int, documents: int, show: bool) -> None:
        stream = sys.stderr if show and chunks > 0 else None
        self._lines = stream if stream is not None and not _redrawn_in_place(stream) else None
        """Where plain lines go, if the bar is not drawn in place."""
        self._bar = _Meter(
            f"0/{documents}",
            total=float(chunks),
            desc="consolidating",
            bar_format=_LIVE_FORMAT if self._lines is None else _LINE_FORMAT,
            smoothing=0,  # the rate of the whole call: stages alternate within a document
            file=None if self._lines is None else _Discard(),
            disable=stream is None,
        )
        self._committed, self._documents = 0, documents
        self._done, self._start, self._chunks, self._label = 0.0, 0.0, 0, ""
        self._last_line = time.monotonic()

    @contextmanager
    def transformation(self, chunks: int, label: str) -> Iterator[None]:
        """One transformation of `chunks` chunks of the document(s) `label` names; the bar
        goes back to where it was if the transformation fails (it may be retried)."""
        self._start, self._chunks = self._done, chunks
        if label != self._label:
            self._label, self._bar.stage = label, ""
            self._bar.set_postfix_str(label[:30], refresh=False)
            self._show(at_once=True)
        try:
            yield
        except BaseException:
            self._move(self._start)
            raise
        self._move(self._start + chunks)

    def __call__(self, stage: str, done: int, total: int) -> None:
        """`LoadedModel.progress`: the transformation under way has come this far."""
        fraction, status = _stage_progress(stage, done, total)
        new_stage = status.split()[0] != self._bar.stage.split(" ")[0]
        self._bar.stage = status
        self._move(self._start + self._chunks * fraction)
        if new_stage:
            self._show(at_once=self._lines is None)

    def committed(self, documents: int) -> None:
        self._committed += documents
        self._bar.documents = f"{self._committed}/{self._documents}"
        self._show(at_once=self._lines is None)

    def __enter__(self) -> IngestBar:
        return self

    def __exit__(self, *_: object) -> None:
        self._show(at_once=True)
        self._bar.close()

    def _move(self, position: float) -> None:
        self._bar.update(position - self._done)
        self._done = position
        self._show(at_once=False)

    def _show(self, at_once: bool) -> None:
        """Redraw now (`at_once`), or print a line if one is due."""
        if self._bar.disable:
            return
        if self._lines is None:
            if at_once:
                self._bar.refresh()
        elif at_once or time.monotonic() - self._last_line >= _LINE_SECONDS:
            print(str(self._bar).rstrip(), file=self._lines, flush=True)
            self._last_line = time.monotonic()


def _stage_progress(stage: str, done: int, total: int) -> tuple[float, str]:
    """How far through its transformation a report puts the bar, and what the bar says."""
    share = done / total if total else 1.0
    if stage == "elicit" and share < 1:
        return _STAGE_SHARES["elicit"] * share, "elicit"
    if stage == "elicit":  # the teacher's targets and the selection come next
        return _STAGE_SHARES["elicit"], "teacher/select"
    return 1 - _STAGE_SHARES["consolidate"] * (1 - share), f"consolidate {done}/{total} steps"


class _Discard:
    """The line mode's tqdm draws nothing itself: `IngestBar` prints its text as lines."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _redrawn_in_place(stream: TextIO) -> bool:
    """A terminal, or a notebook (where tqdm.auto draws a widget, not `\\r` frames)."""
    isatty = getattr(stream, "isatty", None)
    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    return in_notebook or (callable(isatty) and bool(isatty()))


@contextmanager
def reporting_to(lm: LoadedModel, bar: IngestBar) -> Iterator[None]:
    """The model reports its progress to `bar` for the length of the block."""
    before, lm.progress = lm.progress, bar
    try:
        yield
    finally:
        lm.progress = before
