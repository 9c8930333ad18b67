"""Progress of an ingest: the bar advances within a long document, stage by stage and step by
step; nothing is printed without `progress`; no `\\r` frame goes to a stderr that is not a
terminal; loading the model prints no transformers bar and no transformers FutureWarning."""

from __future__ import annotations

import io
import re
import sys
import warnings

import pytest
from transformers.utils import logging as transformers_logging

from parametric_memory import ParametricMemory, ingest_progress
from parametric_memory.config import ChunkingConfig, ShardingConfig
from parametric_memory.engine.models import no_progress

LONG = " ".join(
    f"Lantern {n} of Quillhaven is lit on day {n} by keeper Mira Tallow." for n in range(1, 5)
)
"""Several chunks of `chunk_tokens` 32 on the tiny tokenizer: three transformations of 2."""


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def small_chunks(tiny_config):
    consolidation = tiny_config.consolidation.model_copy(update={"chunks_per_transformation": 2})
    elicitation = tiny_config.elicitation.model_copy(update={"items_per_chunk": 3})
    return tiny_config.model_copy(
        update={
            "chunking": ChunkingConfig(chunk_tokens=32),
            "consolidation": consolidation,
            "elicitation": elicitation,
        }
    )


@pytest.fixture
def memory(tmp_path, small_chunks):
    return ParametricMemory.create(tmp_path / "mem", small_chunks)


_DOCUMENTS = re.compile(r"consolidating:.*?\|\s*(\d+)/(\d+) \[([^\]]*)\]")
"""Documents done/all and the document under way, as `benchmarks/crash_harness.py` reads them."""


def _frames(text: str) -> list[str]:
    return [frame for frame in re.split(r"[\r\n]", text) if frame.startswith("consolidating")]


def _positions(frames: list[str]) -> list[float]:
    return [float(re.search(r"([\d.]+)/\d+ chunks", frame).group(1)) for frame in frames]


def test_a_long_document_advances_on_a_terminal_stage_by_stage(memory, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = memory.add_documents([LONG], ids=["lanterns"])
    assert report.chunks >= 4
    frames = _frames(terminal.getvalue())
    positions = _positions(frames)
    inside = {p for p in positions if 0 < p < report.chunks}
    assert len(inside) > 2, frames  # it moved more than once within one document
    assert positions == sorted(positions) and positions[-1] == report.chunks
    text = "\n".join(frames)
    for stage in ("lanterns] elicit", "lanterns] teacher/select", "lanterns] consolidate"):
        assert stage in text
    assert re.search(r"consolidate \d+/\d+ steps", text)
    assert re.search(r"<\d\d:\d\d", text)  # an ETA
    assert memory.writer().lm.progress is no_progress  # the ingest's bar only during it


def test_without_progress_nothing_is_printed(tmp_path, small_chunks, capsys):
    memory = ParametricMemory.create(tmp_path / "mem", small_chunks)
    memory.add_documents([LONG], ids=["lanterns"], progress=False)
    ParametricMemory.open(tmp_path / "mem")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_without_a_terminal_progress_is_plain_lines(memory, capsys, monkeypatch):
    monkeypatch.setattr(ingest_progress, "_LINE_SECONDS", 0.0)  # a line at every report
    report = memory.add_documents([LONG], ids=["lanterns"])
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("consolidating: ") for line in lines)
    assert len({p for p in _positions(lines) if 0 < p < report.chunks}) > 2
    assert "teacher/select" in err and "consolidate" in err
    assert lines[-1].startswith("consolidating: 100% | 1/1 [")


def test_without_a_terminal_a_line_per_document_tells_what_tools_read(memory, capsys, monkeypatch):
    monkeypatch.setattr(ingest_progress, "_LINE_SECONDS", 1e9)  # no line for time passing
    memory.add_documents(["Mira Tallow lit the first lantern.", LONG], ids=["mira", "lanterns"])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "\r" not in "".join(lines)  # a line as each starts, one at the end
    read = [_DOCUMENTS.search(line).groups() for line in lines]
    assert [(done, total) for done, total, _ in read] == [("0", "2"), ("1", "2"), ("2", "2")]
    assert [fields.split(", ", 2)[2] for *_, fields in read] == ["mira", "lanterns", "lanterns"]


def test_documents_together_report_their_steps(tmp_path, tiny_config, monkeypatch):
    config = tiny_config.model_copy(
        update={"sharding": ShardingConfig(documents_per_shard=1, shards_in_parallel=2)}
    )
    memory = ParametricMemory.create(tmp_path / "mem", config)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    memory.add_documents(["Mira Tallow lit the first lantern.", "Odo Brask runs payroll."])
    text = "\n".join(_frames(terminal.getvalue()))
    assert "and 1 more] elicit" in text and re.search(r"consolidate \d+/\d+ steps", text)


def test_loading_and_ingesting_print_no_transformers_bar_nor_future_warning(
    tmp_path, small_chunks, capsys
):
    bars_before = transformers_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters_before = list(warnings.filters)
        memory = ParametricMemory.create(tmp_path / "mem", small_chunks)
        memory.add_documents([LONG], ids=["lanterns"], progress=False)
        ParametricMemory.open(tmp_path / "mem").ask("Who lights lantern 2?")
        filters_after = list(warnings.filters)
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert future == [], [str(w.message) for w in future]
    assert "Loading weights" not in capsys.readouterr().err
    # Restored, not switched off for the user's whole process.
    assert transformers_logging.is_progress_bar_enabled() == bars_before
    assert filters_after == filters_before


def test_transformers_future_warnings_still_reach_the_user_outside_loading(memory):
    model = memory.writer().lm.model.get_base_model()
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):
        model.is_gradient_checkpointing  # noqa: B018 - the property warns
