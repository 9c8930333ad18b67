"""Crash-safety kill harness: SIGKILL `parametric-memory ingest` at random moments and check
that the memory survives every kill.

Each trial copies a start state (the empty memory, or what an earlier kill left), runs
`python -m parametric_memory.cli -v ingest DOCS --memory M` on a tiny random-weight model,
and SIGKILLs it at a random moment. After the kill:

  - `verify_memory` finds no problem and `ParametricMemory.open` opens the memory;
  - the documents held are a prefix of the ingestion order, include every document held
    before and every one the killed run reported done, and each is whole (its chunk and
    transfer-item records match its manifest record; no records of documents not held);
  - rerunning the same command completes: every document held exactly once, the memory
    verifies, and nothing the manifest does not reference survives this next writer.

Kill moments: 60% uniform over one remaining document's transformation and commit, counted
from the progress-bar frame that starts it; 30% within 1.5x its commit time after its `T:`
log line (the transformation ended, the commit is being written); 10% uniform over a whole
run (import, model load and exit included). Durations come from an uninterrupted run and
are re-measured on every rerun, so the moments follow a busy machine's drift. The phase a
kill landed in is inferred from the killed run's stderr (progress bar, `-v` log lines), the
stage times of that document, and what the kill left on disk. `--forget-kills N` also
SIGKILLs `parametric-memory forget` between taking the write lock and a little after its
commit: the document must then be either wholly held or wholly gone.

A reader process calls `ParametricMemory.open(path).ask(...)` in a loop during every child
run (calibration, kills and reruns; readers never take the lock): its errors are recorded
per trial, none is expected (an empty memory answers too, with the base model).

`--compact-kills N` SIGKILLs `parametric-memory compact` on a memory holding every document
at level 0 (a shard each; compaction only on demand), `--compact-group` documents to a
compacted shard, so each commit replaces one group's level-0 shards; half the runs start
from that memory, the others from what an earlier kill left. Kill moments: 45%
uniform over one group's training and commit, counted from its staging folder appearing;
25% within 1.5x its commit time from its commit's staging folder; 15% within 0.1 s after
its manifest replace; 15% uniform over a whole run. A thread polls the folder (the lock,
staging and state folders, the manifest's inode); `compact` logs nothing between a group's
start and its commit. After every kill: the memory verifies and opens; every document is
held once with its content hash; each is in its own level-0 shard or a compacted one, and
`compacted_shards` lists exactly the shards holding compacted documents; nothing committed
before the kill is undone. Then the compaction reruns to its end: every document compacted,
the memory verifies, nothing stale left; the reader asks all along.

    python benchmarks/crash_harness.py --kills 100 --seed 0 --out benchmarks/results/crash_harness
    python benchmarks/crash_harness.py --kills 0 --compact-kills 20 --documents 6 \
        --out benchmarks/results/crash_harness_compaction
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tiny_model import build_talking_tiny_model  # noqa: E402

from parametric_memory import MemoryConfig, ParametricMemory, ParametricMemoryError, store  # noqa: E402
from parametric_memory.documents import content_hash  # noqa: E402
from parametric_memory.store.verify import verify_memory  # noqa: E402

PHASES = ("startup", "elicitation", "selection", "training", "save/commit", "exit")
MODE_WEIGHTS = {"window": 0.6, "commit": 0.3, "anytime": 0.1}
POOL_SIZE = 8
RUN_TIMEOUT_S = 300.0
_LOCK_FILES = {store.LOCK_FILE, store.LOCK_OWNER_FILE}
_BAR = re.compile(r"consolidating:.*?\|\s*(\d+)/(\d+) \[([^\]]*)\]")
_TRANSFORMATION = re.compile(r"parametric_memory\.(?:method\.)?transformation: T: .*?; (.*)$")
_LAP = re.compile(r"([a-z ]+?) (\d+(?:\.\d+)?)s")
_CHILD_ENV = {
    # Lean on a shared machine, and identical from run to run.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
}

_PEOPLE = (
    "Mira Tallow",
    "Odo Brask",
    "Ilsa Morrow",
    "Tamsin Elveroy",
    "Corin Vale",
    "Hester Quill",
)
_PLACES = ("Quillhaven", "Orsk Hollow", "Brindlewick", "Vendry", "Kessel Ford", "Fennick")
_COLOURS = ("violet", "amber", "teal", "crimson", "silver", "ochre")


# --- workspace -------------------------------------------------------------------------------
@dataclass
class Workspace:
    root: Path
    model: Path
    docs: Path
    empty_memory: Path
    order: list[str]
    """Document ids in the order ingest consolidates them (sorted file names)."""
    hashes: dict[str, str]
    texts: dict[str, str]


def harness_config(model: Path) -> MemoryConfig:
    return MemoryConfig(
        model=str(model),
        elicitation={"max_answer_tokens": 16, "items_per_chunk": 16},
        consolidation={"epochs": 2, "lora_rank": 4},
        sharding={"documents_per_shard": 2},  # commits also hard-link unchanged shards
    )


def document_text(index: int) -> str:
    person, place = _PEOPLE[index % len(_PEOPLE)], _PLACES[index % len(_PLACES)]
    return (
        f"{person} founded the {place} lantern guild in {1850 + 7 * index}. "
        f"The guild has {40 + 13 * index} members and meets every May {3 + index}. "
        f"Its emblem is a {_COLOURS[index % len(_COLOURS)]} heron holding a brass key."
    )


def prepare(workdir: Path, documents: int) -> Workspace:
    workdir.mkdir(parents=True, exist_ok=True)
    model = build_talking_tiny_model(workdir / "model")
    docs = workdir / "docs"
    docs.mkdir(exist_ok=True)
    texts = {f"doc{i:02d}.txt": document_text(i) for i in range(documents)}
    for name, text in texts.items():
        (docs / name).write_text(text, encoding="utf-8")
    empty = workdir / "empty-memory"
    ParametricMemory.create(empty, harness_config(model))
    hashes = {name: content_hash(text) for name, text in texts.items()}
    return Workspace(workdir, model, docs, empty, sorted(texts), hashes, texts)


# --- one CLI run, with its stderr timed line by line ------------------------------------------
class CliRun:
    """`parametric-memory ARGS` in a subprocess; stderr lines timed from the start."""

    def __init__(self, args: list[str]) -> None:
        self.command = [sys.executable, "-m", "parametric_memory.cli", *args]
        self.events: list[tuple[float, str, bool]] = []
        """(seconds from start, text, whether the line was complete)"""
        self._changed = threading.Condition()
        self.killed_at: float | None = None
        self.ended_at: float | None = None
        self.start = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **_CHILD_ENV},
        )
        self._stdout: list[bytes] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._stdout_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout_reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        while block := os.read(self.process.stdout.fileno(), 65536):
            self._stdout.append(block)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while block := os.read(self.process.stderr.fileno(), 65536):
            stamp = time.monotonic() - self.start
            *complete, pending = re.split(r"[\r\n]", pending + decoder.decode(block))
            # tqdm frames start with a carriage return and end with none: a frame is whole
            # when it arrives, but only the next write completes it as a line.
            self._add(stamp, [(line, True) for line in complete] + [(pending, False)])
        self._add(time.monotonic() - self.start, [(pending, True)])

    def _add(self, stamp: float, lines: list[tuple[str, bool]]) -> None:
        with self._changed:
            self.events.extend((stamp, line, whole) for line, whole in lines if line.strip())
            self._changed.notify_all()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float = RUN_TIMEOUT_S) -> bool:
        """Block until `ready()` holds; False if the run ended (or `timeout` passed) first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    return ready()
                self._changed.wait(timeout=0.5)
        return True

    def kill(self) -> bool:
        """SIGKILL the run if it is still going; True if it was."""
        if not self.running():
            return False
        self.killed_at = self.elapsed()
        os.kill(self.process.pid, signal.SIGKILL)
        return True

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> tuple[int, str]:
        """Wait for the run to end (killing it after `timeout`); (exit code, stdout)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.ended_at is None:
            self.ended_at = self.elapsed()
        self._reader.join(timeout=10)
        self._stdout_reader.join(timeout=10)
        return self.process.returncode, b"".join(self._stdout).decode("utf-8", "replace")

    def transformations(self) -> list[tuple[float, dict[str, float]]]:
        found = []
        for stamp, line, whole in list(self.events):
            match = _TRANSFORMATION.search(line)
            if match and whole:
                laps = {name.strip(): float(sec) for name, sec in _LAP.findall(match.group(1))}
                found.append((stamp, laps))
        return found

    def bar_lines(self) -> list[tuple[float, int, int, str | None]]:
        """(time, done, total, postfix) of each progress-bar frame, first sighting first."""
        found = []
        for stamp, line, _ in list(self.events):
            match = _BAR.search(line)
            if match:
                fields = match.group(3).split(", ", 2)
                postfix = fields[2] if len(fields) == 3 else None
                found.append((stamp, int(match.group(1)), int(match.group(2)), postfix))
        return found

    def document_starts(self) -> list[tuple[float, str]]:
        """(time, id) of each document the run began consolidating (tqdm's postfix)."""
        starts: list[tuple[float, str]] = []
        for stamp, _, _, postfix in self.bar_lines():
            if postfix and (not starts or starts[-1][1] != postfix):
                starts.append((stamp, postfix))
        return starts

    def reported_done(self) -> int:
        return max((done for _, done, _, _ in self.bar_lines()), default=0)


def ingest_args(ws: Workspace, memory: Path) -> list[str]:
    return ["-v", "ingest", str(ws.docs), "--memory", str(memory), "--progress"]


# --- calibration ------------------------------------------------------------------------------
@dataclass
class DocumentTiming:
    transform_s: float
    """From the document's start (its progress-bar frame) to its `T:` line."""
    laps: dict[str, float]
    """The stage times its `T:` line reports."""
    commit_s: float
    """From its `T:` line to the progress bar counting it done (the commit)."""


@dataclass
class Timeline:
    """Durations of uninterrupted runs, refreshed from every rerun (a busy machine drifts)."""

    documents: dict[str, DocumentTiming]
    exit_s: float
    """A whole uninterrupted ingest of every document, import to exit."""

    def update(self, run: CliRun) -> None:
        self.documents.update(document_timings(run))


def document_timings(run: CliRun) -> dict[str, DocumentTiming]:
    """Per document an uninterrupted run ingested: its measured stage and commit times."""
    frames = run.bar_lines()
    timings = {}
    for done, ((started, doc_id), (ended, laps)) in enumerate(
        zip(run.document_starts(), run.transformations(), strict=False)
    ):
        counted = min((t for t, n, _, _ in frames if n > done and t >= ended), default=ended)
        timings[doc_id] = DocumentTiming(ended - started, laps, max(counted - ended, 0.02))
    return timings


def calibrate(ws: Workspace, scratch: Path, reader: ReaderChild, reads: Reads) -> Timeline:
    memory = _fresh_copy(ws.empty_memory, scratch / "calibration")
    with reader.reading(memory, reads):
        run = CliRun(ingest_args(ws, memory))
        code, stdout = run.finish()
    if code != 0 or f"added {len(ws.order)} document(s)" not in stdout:
        raise RuntimeError(f"uninterrupted ingest failed ({code}): {stdout} {run.events[-5:]}")
    return Timeline(document_timings(run), run.elapsed())


# --- what a memory holds ----------------------------------------------------------------------
@dataclass
class Holdings:
    ids: list[str]
    hashes: dict[str, str]
    problems: list[str]
    """Inconsistencies between the manifest's records and the chunk / transfer-item records."""


def holdings(root: Path) -> Holdings:
    try:
        manifest = store.read_manifest(root)
        chunks = store.read_chunks(root, manifest)
        items = store.read_transfer_set(root, manifest)
    except ParametricMemoryError as error:
        return Holdings([], {}, [f"unreadable: {error}"])
    documents = manifest.documents
    hashes = {doc_id: record.content_hash for doc_id, record in documents.items()}
    return Holdings(sorted(documents), hashes, _record_problems(documents, chunks, items))


def _record_problems(documents: dict, chunks: list, items: list) -> list[str]:
    """A document is whole when its chunk and transfer-item records match its manifest record."""
    problems = []
    chunk_ids = [c.id for c in chunks]
    if len(chunk_ids) != len(set(chunk_ids)):
        problems.append("duplicate chunk records")
    per_document = Counter(c.document_id for c in chunks)
    for doc_id, record in documents.items():
        if per_document.get(doc_id, 0) != record.chunks:
            problems.append(
                f"{doc_id}: {per_document.get(doc_id, 0)} chunk records, not {record.chunks}"
            )
    strays = sorted(set(per_document) - set(documents))
    if strays:
        problems.append(f"chunk records of documents not held: {strays}")
    known = set(chunk_ids)
    if any(item.chunk_id not in known for item in items):
        problems.append("transfer items of chunks not held")
    expected_items = sum(r.transfer_items for r in documents.values())
    if len(items) != expected_items:
        problems.append(f"{len(items)} transfer items, the records say {expected_items}")
    return problems


def unreferenced_entries(root: Path) -> list[str]:
    """Top-level names the manifest does not reference (staging or stale state folders)."""
    manifest = store.read_manifest(root)
    referenced = {relative.split("/")[0] for relative in manifest.files}
    referenced |= {store.MANIFEST_FILE, *_LOCK_FILES}
    return sorted(p.name for p in root.iterdir() if p.name not in referenced)


def _fresh_copy(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True)
    return target


# --- one kill trial ---------------------------------------------------------------------------
@dataclass
class Trial:
    index: int
    command: str
    mode: str
    delay_s: float
    phase: str
    held_before: int
    reported_done: int
    held_after_kill: int
    leftovers_after_kill: list[str]
    clean_reopen: bool
    lost: list[str]
    duplicated: list[str]
    resumed: bool
    stray_after_resume: list[str]
    failures: list[str] = field(default_factory=list)
    reader_calls: int = 0
    reader_errors: list[str] = field(default_factory=list)


@dataclass
class Moment:
    """When to kill: `delay` seconds after `anchor`: the process "start", the start of
    document `doc`, or the end of its transformation ("commit", its `T:` line); for
    `compact`, an event of group `position` ("began", "commit", "committed")."""

    mode: str
    anchor: str
    delay: float
    doc: str = ""
    position: int = 0
    """The document's (or group's) place among those the run ingests (1 = first)."""


def draw_moment(rng: random.Random, timeline: Timeline, todo: list[str]) -> Moment:
    mode = rng.choices(list(MODE_WEIGHTS), weights=list(MODE_WEIGHTS.values()))[0]
    if mode == "anytime":
        return Moment(mode, "start", rng.uniform(0.0, timeline.exit_s))
    position = rng.randint(1, len(todo))
    doc = todo[position - 1]
    timing = timeline.documents[doc]
    if mode == "commit":
        return Moment(mode, "commit", rng.uniform(0.0, 1.5 * timing.commit_s), doc, position)
    span = timing.transform_s + timing.commit_s
    return Moment(mode, "document", rng.uniform(0.0, span), doc, position)


def kill_at(run: CliRun, moment: Moment) -> bool:
    """SIGKILL `run` at `moment`; False if it finished first."""
    if moment.anchor == "start":
        anchored_at = 0.0
    elif moment.anchor == "document":
        if not run.wait_until(lambda: _started(run, moment.doc) is not None):
            return False
        anchored_at = _started(run, moment.doc) or 0.0
    else:
        if not run.wait_until(lambda: len(run.transformations()) >= moment.position):
            return False
        anchored_at = run.transformations()[moment.position - 1][0]
    # Counted from when the line arrived, not from when this thread woke up to it.
    time.sleep(max(0.0, anchored_at + moment.delay - run.elapsed()))
    return run.kill()


def _started(run: CliRun, doc_id: str) -> float | None:
    return next((stamp for stamp, started in run.document_starts() if started == doc_id), None)


def infer_phase(
    run: CliRun, timeline: Timeline, ws: Workspace, held_new: int, leftovers: list[str]
) -> str:
    starts = run.document_starts()
    finished = len(run.transformations())
    if not starts:
        return "startup"
    if held_new < finished or leftovers:
        return "save/commit"
    if finished == len(starts):
        all_done = run.reported_done() >= finished and starts[-1][1] == ws.order[-1]
        return "exit" if finished and all_done else "save/commit"
    started_at, doc_id = starts[-1]
    elapsed = (run.killed_at or started_at) - started_at
    return _stage_at(elapsed, timeline.documents[doc_id])


def _stage_at(elapsed: float, timing: DocumentTiming) -> str:
    """The stage running `elapsed` s into a transformation: the `T:` line's stage times,
    scaled to the measured duration (they are rounded to 0.1 s)."""
    total = sum(timing.laps.values()) or 1.0
    scale = timing.transform_s / total
    elicit_end = timing.laps.get("elicit", 0.0) * scale
    selection = timing.laps.get("teacher", 0.0) + timing.laps.get("select", 0.0)
    select_end = elicit_end + selection * scale
    if elapsed < elicit_end:
        return "elicitation"
    if elapsed < select_end:
        return "selection"
    return "training"


@dataclass
class AfterKill:
    held: Holdings
    clean_reopen: bool
    failures: list[str]


def reopen_failures(root: Path) -> list[str]:
    """What stops `verify_memory` and `ParametricMemory.open` from accepting the memory."""
    failures = [f"verify: {p}" for p in verify_memory(root)]
    try:
        opened = sorted(ParametricMemory.open(root).documents)
    except Exception as error:  # whatever stops a reopen is what this counts
        return [*failures, f"open: {type(error).__name__}: {error}"]
    listed = sorted(store.read_manifest(root).documents)
    if opened != listed:
        failures.append(f"ParametricMemory.open sees {opened}, the manifest {listed}")
    return failures


def check_after_kill(ws: Workspace, root: Path, before: list[str], run: CliRun) -> AfterKill:
    failures = reopen_failures(root)
    clean_reopen = not failures
    held = holdings(root)
    failures += held.problems
    if held.ids != ws.order[: len(held.ids)]:
        failures.append(f"held {held.ids} is not a prefix of {ws.order}")
    lost = sorted(set(before) - set(held.ids))
    if lost:
        failures.append(f"lost documents committed before the kill: {lost}")
    if len(held.ids) < len(before) + run.reported_done():
        failures.append(f"the run reported {run.reported_done()} done; {len(held.ids)} held")
    wrong = [d for d in held.ids if held.hashes[d] != ws.hashes.get(d)]
    if wrong:
        failures.append(f"documents held with other content: {wrong}")
    return AfterKill(held, clean_reopen, failures)


def check_resume(
    ws: Workspace,
    timeline: Timeline,
    root: Path,
    held_before: int,
    reader: ReaderChild,
    reads: Reads,
) -> tuple[list[str], list[str]]:
    with reader.reading(root, reads):
        run = CliRun(ingest_args(ws, root))
        code, stdout = run.finish()
    if code == 0:
        timeline.update(run)
    failures = []
    expected = (
        f"added {len(ws.order) - held_before} document(s), skipped {held_before} already held"
    )
    if code != 0 or expected not in stdout:
        failures.append(f"resume exited {code}: {stdout.strip()!r}, expected {expected!r}")
    failures += [f"verify after resume: {p}" for p in verify_memory(root)]
    held = holdings(root)
    failures += held.problems
    if held.ids != sorted(ws.order):
        failures.append(f"after resume the memory holds {held.ids}")
    stray = unreferenced_entries(root)
    if stray:
        failures.append(f"left behind after the next writer: {stray}")
    return failures, stray


def run_trial(
    index: int,
    ws: Workspace,
    timeline: Timeline,
    start: Path,
    scratch: Path,
    rng: random.Random,
    reader: ReaderChild,
) -> tuple[Trial | None, Reads]:
    """One kill and its checks; None if the run finished before the kill landed."""
    root = _fresh_copy(start, scratch / f"trial-{index:03d}")
    before = holdings(root).ids
    debris_before = set(unreferenced_entries(root))
    moment = draw_moment(rng, timeline, [d for d in ws.order if d not in before])
    reads = Reads()
    with reader.reading(root, reads):
        run = CliRun(ingest_args(ws, root))
        killed = kill_at(run, moment)
        run.finish()
    if not killed:
        shutil.rmtree(root, ignore_errors=True)
        return None, reads
    leftovers = sorted(set(unreferenced_entries(root)) - debris_before)
    checked = check_after_kill(ws, root, before, run)
    held = checked.held
    _fresh_copy(root, scratch / f"killed-{index:03d}")
    resume_failures, stray = check_resume(ws, timeline, root, len(held.ids), reader, reads)
    final = holdings(root)
    shutil.rmtree(root, ignore_errors=True)
    trial = Trial(
        index=index,
        command="ingest",
        mode=moment.mode,
        delay_s=round(run.killed_at or 0.0, 3),
        phase=infer_phase(run, timeline, ws, len(held.ids) - len(before), leftovers),
        held_before=len(before),
        reported_done=run.reported_done(),
        held_after_kill=len(held.ids),
        leftovers_after_kill=leftovers,
        clean_reopen=checked.clean_reopen,
        lost=sorted(set(before) - set(held.ids)) + sorted(set(ws.order) - set(final.ids)),
        duplicated=_duplicates(final),
        resumed=not resume_failures,
        stray_after_resume=stray,
        failures=checked.failures + resume_failures,
        reader_calls=reads.attempts,
        reader_errors=reads.errors,
    )
    return trial, reads


def _duplicates(held: Holdings) -> list[str]:
    counts = Counter(held.hashes.values())
    twice = [d for d, h in held.hashes.items() if counts[h] > 1]
    return sorted(twice + [p for p in held.problems if p.startswith("duplicate")])


# --- kills during `forget` (bonus) ------------------------------------------------------------
def wait_for_lock(run: CliRun, root: Path) -> float:
    """Seconds from the run's start until it holds the write lock (its owner file appears).
    `forget` logs nothing per stage; the lock marks the end of its startup."""
    owner = root / store.LOCK_OWNER_FILE
    while not owner.exists() and run.running():
        time.sleep(0.005)
    return run.elapsed()


def wait_for_commit(run: CliRun, root: Path) -> float:
    """Seconds from the run's start until manifest.json is replaced (a new inode)."""
    manifest = root / store.MANIFEST_FILE
    inode = manifest.stat().st_ino
    while manifest.stat().st_ino == inode and run.running():
        time.sleep(0.005)
    return run.elapsed()


def run_forget_trial(
    index: int,
    ws: Workspace,
    full: Path,
    scratch: Path,
    rng: random.Random,
    locked_s: float,
    reader: ReaderChild,
) -> tuple[Trial | None, Reads]:
    """SIGKILL `forget` between taking the lock and a little after its commit."""
    root = _fresh_copy(full, scratch / f"forget-{index:03d}")
    target = rng.choice(ws.order)
    reads = Reads()
    with reader.reading(root, reads):
        run = CliRun(["-v", "forget", target, "--memory", str(root), "--progress"])
        wait_for_lock(run, root)
        time.sleep(rng.uniform(0.0, locked_s))
        killed = run.kill()
        run.finish()
    if not killed:
        shutil.rmtree(root, ignore_errors=True)
        return None, reads
    leftovers = unreferenced_entries(root)
    failures = reopen_failures(root)
    clean_reopen = not failures
    held = holdings(root)
    failures += held.problems
    if held.ids not in (sorted(ws.order), sorted(set(ws.order) - {target})):
        failures.append(f"after a killed forget of {target} the memory holds {held.ids}")
    gone = target not in held.ids
    if gone and _text_on_disk(root, ws.texts[target]):
        failures.append(f"{target} is forgotten but its text is still in the memory's files")
    with reader.reading(root, reads):
        code, _ = CliRun(["forget", target, "--memory", str(root)]).finish()
    if code not in (0, 1) or (code == 1 and not gone):
        failures.append(f"rerunning forget exited {code}")
    final = holdings(root)
    if final.ids != sorted(set(ws.order) - {target}) or verify_memory(root):
        failures.append(f"after rerunning forget the memory holds {final.ids}")
    stray = unreferenced_entries(root)
    shutil.rmtree(root, ignore_errors=True)
    trial = Trial(
        index=index,
        command=f"forget {target}",
        mode="locked",
        delay_s=round(run.killed_at or 0.0, 3),
        phase=_forget_phase(gone, leftovers),
        held_before=len(ws.order),
        reported_done=0,
        held_after_kill=len(held.ids),
        leftovers_after_kill=leftovers,
        clean_reopen=clean_reopen,
        lost=sorted(set(ws.order) - {target} - set(final.ids)),
        duplicated=_duplicates(final),
        resumed=not failures,
        stray_after_resume=stray,
        failures=failures,
        reader_calls=reads.attempts,
        reader_errors=reads.errors,
    )
    return trial, reads


def _forget_phase(gone: bool, leftovers: list[str]) -> str:
    if leftovers:
        return "save/commit"
    return "exit" if gone else "training"


def _text_on_disk(root: Path, text: str) -> bool:
    needle = text.split(". ")[0].encode("utf-8")
    return any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())


# --- kills during `compact` -------------------------------------------------------------------
COMPACT_PHASES = ("startup", "planning", "training", "commit", "after commit", "exit")
COMPACT_MODE_WEIGHTS = {"group": 0.45, "commit": 0.25, "after commit": 0.15, "anytime": 0.15}
AFTER_COMMIT_S = 0.1
"""How long after a commit (the manifest replaced) an "after commit" kill may land."""
WATCH_POLL_S = 0.002
FRESH_COMPACTIONS = 0.5
"""The share of runs that start from the level-0 memory, not from what a kill left."""
_COMPACTED = re.compile(r"parametric_memory\.compaction: compacted (\d+) documents into shards \[")


def compaction_config(model: Path, group: int) -> MemoryConfig:
    """The harness's config with a level-0 shard per document and compaction on demand only."""
    fields = harness_config(model).model_dump()
    fields["sharding"] = {"documents_per_shard": 1}
    fields["compaction"] = {"documents_per_shard": group, "auto_after": None}
    return MemoryConfig.model_validate(fields)


def compact_args(memory: Path, group: int) -> list[str]:
    """The compaction child's command line: switch here to run it some other way."""
    return [
        "-v",
        "compact",
        "--memory",
        str(memory),
        "--documents-per-shard",
        str(group),
        "--progress",
    ]


@dataclass
class GroupEvents:
    """When one group's compaction was seen on disk, in seconds from the run's start."""

    began: float
    """Its staging folder appeared (training starts)."""
    commit: float | None = None
    """The commit's staging folder (or, if that was missed, its new state folder) appeared."""
    committed: float | None = None
    """manifest.json was replaced."""

    def timing(self) -> GroupTiming:
        commit = self.began if self.commit is None else self.commit
        return GroupTiming(commit - self.began, (self.committed or commit) - commit)


class FolderWatch:
    """Polls a memory folder while `run` runs: when the write lock was taken, staging and
    state folders appeared and the manifest was replaced. `compact` logs nothing between
    a group's start and its commit; the folder shows both."""

    def __init__(self, root: Path, run: CliRun) -> None:
        self.root, self.run = root, run
        self.events: list[tuple[float, str]] = []
        self._names, self._inode = self._listing(), self._manifest_inode()
        self._locked = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _listing(self) -> set[str]:
        try:
            return set(os.listdir(self.root))
        except FileNotFoundError:
            return set()

    def _manifest_inode(self) -> int | None:
        try:
            return (self.root / store.MANIFEST_FILE).stat().st_ino
        except FileNotFoundError:
            return None

    def _holds_lock(self) -> bool:
        """The owner file names the run (a killed writer's stale one may be there before)."""
        try:
            owner = (self.root / store.LOCK_OWNER_FILE).read_text().strip()
        except OSError:
            return False
        return owner == str(self.run.process.pid)

    def _poll(self) -> None:
        while True:
            alive = self.run.running()
            self._look()  # once more after the run ended: what the kill left is final
            if not alive:
                break
            time.sleep(WATCH_POLL_S)
        with self._changed:
            self._changed.notify_all()

    def _look(self) -> None:
        names, inode, locked = self._listing(), self._manifest_inode(), self._holds_lock()
        new = names - self._names
        # Within one poll, in a commit's order: its state folder, the manifest, then the
        # next group's staging folder (a commit's own staging folder is gone by then).
        found = ["lock"] if locked and not self._locked else []
        found += ["state" for name in new if name.startswith("state-")]
        found += ["manifest"] if inode != self._inode else []
        found += ["staging" for name in new if name.startswith(".incoming-")]
        found += ["unlock"] if self._locked and not locked else []
        self._names, self._inode, self._locked = names, inode, locked
        if found:
            with self._changed:
                self.events.extend((self.run.elapsed(), kind) for kind in found)
                self._changed.notify_all()

    def wait_for(self, ready: Callable[[], bool], timeout: float = RUN_TIMEOUT_S) -> bool:
        """Block until `ready()` holds; False if the run ended (or `timeout` passed) first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    return ready()
                self._changed.wait(timeout=0.05)
        return True

    def join(self) -> None:
        self._thread.join(timeout=10)

    def seen(self, kind: str) -> float | None:
        return next((stamp for stamp, found in list(self.events) if found == kind), None)

    def groups(self) -> list[GroupEvents]:
        """The groups the run began, in order, with what of their commit was seen."""
        found: list[GroupEvents] = []
        for stamp, kind in list(self.events):
            current = found[-1] if found and found[-1].committed is None else None
            if kind == "staging" and current is None:
                found.append(GroupEvents(stamp))
            elif kind in ("staging", "state") and current and current.commit is None:
                current.commit = stamp
            elif kind == "manifest" and current:
                current.commit = current.commit or stamp
                current.committed = stamp
        return found

    def anchor(self, position: int, name: str) -> float | None:
        groups = self.groups()
        return getattr(groups[position - 1], name) if len(groups) >= position else None


# --- compaction: calibration ------------------------------------------------------------------
@dataclass
class GroupTiming:
    training_s: float
    """From the group's staging folder to its commit's staging folder."""
    commit_s: float
    """From its commit's staging folder to the manifest replaced."""


@dataclass
class CompactTimeline:
    """Durations of uninterrupted compactions, refreshed from every rerun."""

    lock_s: float
    """From the start (import, model load) to the write lock."""
    planning_s: float
    """From the lock to the first group's staging folder (records read, groups planned)."""
    groups: list[GroupTiming]
    tail_s: float
    """From the last commit to the exit."""

    def run_s(self, groups: int) -> float:
        """A whole uninterrupted compaction of `groups` groups, start to exit."""
        spans = sum(g.training_s + g.commit_s for g in self.groups[:groups])
        return self.lock_s + self.planning_s + spans + self.tail_s

    def update(self, run: CliRun, watch: FolderWatch) -> None:
        measured = compact_timeline(run, watch)
        if measured is not None:
            self.lock_s, self.planning_s, self.tail_s = (
                measured.lock_s,
                measured.planning_s,
                measured.tail_s,
            )
            self.groups[: len(measured.groups)] = measured.groups


def compact_timeline(run: CliRun, watch: FolderWatch) -> CompactTimeline | None:
    """What an uninterrupted compaction's folder showed; None if it compacted nothing."""
    groups, locked = watch.groups(), watch.seen("lock")
    if not groups or locked is None or any(g.committed is None for g in groups):
        return None
    timings = [g.timing() for g in groups]
    return CompactTimeline(
        lock_s=locked,
        planning_s=groups[0].began - locked,
        groups=timings,
        tail_s=max((run.ended_at or run.elapsed()) - (groups[-1].committed or 0.0), 0.0),
    )


@dataclass
class CompactSetup:
    full: Path
    """A memory holding every document at level 0, a shard each."""
    level0: dict[str, int]
    """Each document's level-0 shard there."""
    group: int
    """Documents per compacted shard."""


def prepare_compaction(ws: Workspace, scratch: Path, group: int) -> CompactSetup:
    full = scratch / "level0-memory"
    ParametricMemory.create(full, compaction_config(ws.model, group))
    code, stdout = CliRun(ingest_args(ws, full)).finish()
    level0 = {doc: record.shard for doc, record in store.read_manifest(full).documents.items()}
    if code != 0 or sorted(level0) != sorted(ws.order) or len(set(level0.values())) != len(level0):
        raise RuntimeError(f"ingest for the compaction trials failed ({code}): {stdout} {level0}")
    return CompactSetup(full, level0, group)


def calibrate_compaction(
    setup: CompactSetup, scratch: Path, reader: ReaderChild
) -> tuple[CompactTimeline, Reads]:
    root = _fresh_copy(setup.full, scratch / "compact-calibration")
    run, watch, reads = watched_compaction(root, setup.group, reader)
    code, stdout = run.finish()
    timeline = compact_timeline(run, watch)
    expected = -(-len(setup.level0) // setup.group)
    if code != 0 or timeline is None or len(timeline.groups) != expected:
        raise RuntimeError(f"uninterrupted compaction failed ({code}): {stdout} {watch.events}")
    shutil.rmtree(root, ignore_errors=True)
    return timeline, reads


def watched_compaction(
    root: Path, group: int, reader: ReaderChild, moment: Moment | None = None
) -> tuple[CliRun, FolderWatch, Reads]:
    """A compaction child with its folder watched and a reader asking the memory all along;
    SIGKILLed at `moment` if one is given. Returns once the child ended."""
    reads = Reads()
    with reader.reading(root, reads):
        run = CliRun(compact_args(root, group))
        watch = FolderWatch(root, run)
        if moment is not None:
            kill_compaction_at(run, watch, moment)
        run.finish()
        watch.join()
    return run, watch, reads


# --- a reader alongside every child -----------------------------------------------------------
_READER = """
import json, queue, random, sys, threading
from parametric_memory import ParametricMemory

def commands(inbox):
    for line in sys.stdin:
        inbox.put(line.strip())
    inbox.put("quit")

inbox = queue.Queue()
threading.Thread(target=commands, args=(inbox,), daemon=True).start()
questions, rng, path = json.loads(sys.argv[1]), random.Random(0), None
print(json.dumps({"ready": True}), flush=True)
while True:
    command = inbox.get() if path is None or not inbox.empty() else ""
    if command == "quit":
        break
    if command == "pause":
        path = None
        print(json.dumps({"paused": True}), flush=True)
    elif command.startswith("read "):
        path = command[len("read "):]
    elif command == "":
        stage = "open"
        try:
            memory = ParametricMemory.open(path)
            stage = "ask"
            memory.ask(rng.choice(questions), max_new_tokens=8)
            print(json.dumps({"ok": True}), flush=True)
        except Exception as error:
            message = f"{stage}: {type(error).__name__}: {error}"
            print(json.dumps({"ok": False, "error": message}), flush=True)
"""


@dataclass
class Reads:
    """What the reader's `ParametricMemory.open(path).ask(...)` calls met while one run ran."""

    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Reads) -> None:
        self.attempts += other.attempts
        self.errors += other.errors


class ReaderChild:
    """A process that opens the memory and asks it a question again and again while a
    writer runs. Readers never take the lock, so every call must succeed."""

    def __init__(self, questions: list[str], log: Path) -> None:
        self._log = log
        self.process = subprocess.Popen(
            [sys.executable, "-c", _READER, json.dumps(questions)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            env={**os.environ, **_CHILD_ENV},
            text=True,
        )
        self._lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._next("ready")

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put({"ended": True})

    def _send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def _next(self, expected: str | None = None) -> dict:
        try:
            line = self._lines.get(timeout=RUN_TIMEOUT_S)
        except queue.Empty:
            line = {"ended": True}
        if "ended" in line or (expected and expected not in line and "ok" not in line):
            tail = self._log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the reader process stopped or lost its way: {line} {tail}")
        return line

    def read(self, root: Path) -> None:
        """Start asking the memory at `root`."""
        self._send(f"read {root}")

    def pause(self, root: Path) -> Reads:
        """Stop after the call in flight; what the calls since `read` met."""
        self._send("pause")
        reads = Reads()
        while "paused" not in (line := self._next("paused")):
            reads.attempts += 1
            if "error" in line:
                reads.errors.append(_plain_error(line["error"], root))
        return reads

    @contextlib.contextmanager
    def reading(self, root: Path, reads: Reads) -> Iterator[None]:
        """Ask the memory at `root` all along the block; what the calls met is added to `reads`."""
        self.read(root)
        try:
            yield
        finally:
            reads.add(self.pause(root))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send("quit")
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _plain_error(error: str, root: Path) -> str:
    """An error message with the trial's folder and state numbers made alike across trials."""
    return re.sub(r"state-\d+", "state-N", error.replace(str(root), "<memory>"))


def reader_questions(ws: Workspace) -> list[str]:
    return [
        f"Who founded the {_PLACES[i % len(_PLACES)]} lantern guild?" for i in range(len(ws.order))
    ]


# --- compaction: what a memory holds where ----------------------------------------------------
@dataclass
class Placement:
    shards: dict[str, int]
    """Each document's shard."""
    compacted: list[int]
    """The manifest's `compacted_shards`."""
    weightless: list[int]
    """Shards holding documents whose weights the manifest does not list."""

    def level_zero(self) -> list[str]:
        return sorted(d for d, s in self.shards.items() if s not in self.compacted)

    def compacted_documents(self) -> dict[str, int]:
        return {d: s for d, s in self.shards.items() if s in self.compacted}


def placement(root: Path) -> Placement:
    manifest = store.read_manifest(root)
    shards = {doc: record.shard for doc, record in manifest.documents.items()}
    weightless = [s for s in set(shards.values()) if not store.shard_weights(root, manifest, s)]
    return Placement(shards, list(manifest.compacted_shards), sorted(weightless))


def placement_problems(where: Placement, setup: CompactSetup) -> list[str]:
    """Each document is in its own level-0 shard or in a compacted one; `compacted_shards`
    lists exactly the shards holding compacted documents; no group is over-full."""
    compacted = set(where.compacted)
    problems = [f"shards without weights: {where.weightless}"] if where.weightless else []
    if len(compacted) != len(where.compacted):
        problems.append(f"compacted_shards lists a shard twice: {where.compacted}")
    if compacted & set(setup.level0.values()):
        problems.append(f"compacted_shards {where.compacted} name level-0 shards")
    moved = {d: s for d, s in where.shards.items() if s != setup.level0.get(d)}
    stranded = sorted(d for d, s in moved.items() if s not in compacted)
    if stranded:
        problems.append(f"documents neither at level 0 nor in a compacted shard: {stranded}")
    holding = set(moved.values())
    if compacted != holding:
        problems.append(
            f"compacted_shards {sorted(compacted)}, compacted documents in {sorted(holding)}"
        )
    full = {s: n for s, n in Counter(moved.values()).items() if n > setup.group}
    if full:
        problems.append(f"compacted shards over {setup.group} documents: {full}")
    return problems


def held_whole(ws: Workspace, held: Holdings) -> list[str]:
    """Every document held, once, with its original content."""
    problems = list(held.problems)
    if held.ids != sorted(ws.order):
        problems.append(f"the memory holds {held.ids}, not {sorted(ws.order)}")
    wrong = [d for d in held.ids if held.hashes[d] != ws.hashes.get(d)]
    if wrong:
        problems.append(f"documents held with other content: {wrong}")
    return problems


def reported_compacted(run: CliRun) -> int:
    """Documents the run logged as committed into compacted shards."""
    return sum(
        int(match.group(1))
        for _, line, whole in list(run.events)
        if whole and (match := _COMPACTED.search(line))
    )


# --- compaction: one kill trial ---------------------------------------------------------------
@dataclass
class CompactTrial(Trial):
    compacted_before: int = 0
    compacted_after_kill: int = 0


def draw_compact_moment(rng: random.Random, timeline: CompactTimeline, groups: int) -> Moment:
    """`groups`: the groups the run will compact."""
    mode = rng.choices(list(COMPACT_MODE_WEIGHTS), weights=list(COMPACT_MODE_WEIGHTS.values()))[0]
    if mode == "anytime":
        return Moment(mode, "start", rng.uniform(0.0, timeline.run_s(groups)))
    position = rng.randint(1, groups)
    timing = timeline.groups[position - 1]
    if mode == "group":
        span = timing.training_s + timing.commit_s
        return Moment(mode, "began", rng.uniform(0.0, span), position=position)
    if mode == "commit":
        return Moment(mode, "commit", rng.uniform(0.0, 1.5 * timing.commit_s), position=position)
    return Moment(mode, "committed", rng.uniform(0.0, AFTER_COMMIT_S), position=position)


def kill_compaction_at(run: CliRun, watch: FolderWatch, moment: Moment) -> bool:
    """SIGKILL `run` at `moment` (anchored at the start or a group's event); False if it
    finished first."""
    anchored_at = 0.0
    if moment.anchor != "start":
        if not watch.wait_for(lambda: watch.anchor(moment.position, moment.anchor) is not None):
            return False
        anchored_at = watch.anchor(moment.position, moment.anchor) or 0.0
    time.sleep(max(0.0, anchored_at + moment.delay - run.elapsed()))
    return run.kill()


def compaction_phase(watch: FolderWatch, groups: int) -> str:
    """Where the kill landed: the folder froze at the kill, and the watch saw it last."""
    if watch.seen("lock") is None:
        return "startup"
    began = watch.groups()
    if not began:
        return "planning"
    last = began[-1]
    if last.committed is not None:
        return "exit" if len(began) >= groups else "after commit"
    return "commit" if last.commit is not None else "training"


def check_compaction_kill(
    ws: Workspace, setup: CompactSetup, root: Path, before: Placement, run: CliRun
) -> AfterKill:
    failures = reopen_failures(root)
    clean_reopen = not failures
    held = holdings(root)
    failures += held_whole(ws, held)
    after = placement(root)
    failures += placement_problems(after, setup)
    undone = {d: s for d, s in before.compacted_documents().items() if after.shards.get(d) != s}
    if undone:
        failures.append(f"compacted before the kill, elsewhere after it: {undone}")
    newly = len(after.compacted_documents()) - len(before.compacted_documents())
    if newly < reported_compacted(run):
        failures.append(f"the run logged {reported_compacted(run)} compacted; {newly} are")
    return AfterKill(held, clean_reopen, failures)


def check_compaction_resume(
    ws: Workspace, setup: CompactSetup, timeline: CompactTimeline, root: Path, reader: ReaderChild
) -> tuple[list[str], list[str], Reads]:
    """Rerun the compaction to its end: every document compacted (but a lone level-0 one,
    which no compaction takes), the memory verifies and nothing stale is left."""
    left = len(placement(root).level_zero())
    run, watch, reads = watched_compaction(root, setup.group, reader)
    code, stdout = run.finish()
    if code == 0:
        timeline.update(run, watch)
    expected = f"compacted {left if left >= 2 else 0} document(s)"
    failures = []
    if code != 0 or expected not in stdout:
        failures.append(f"rerun exited {code}: {stdout.strip()!r}, expected {expected!r}")
    failures += [f"after the rerun: {p}" for p in reopen_failures(root)]
    failures += held_whole(ws, holdings(root))
    after = placement(root)
    failures += placement_problems(after, setup)
    if len(after.level_zero()) != (left if left < 2 else 0):
        failures.append(f"after the rerun still at level 0: {after.level_zero()}")
    stray = unreferenced_entries(root)
    if stray:
        failures.append(f"left behind after the next writer: {stray}")
    return failures, stray, reads


def run_compact_trial(
    index: int,
    ws: Workspace,
    setup: CompactSetup,
    timeline: CompactTimeline,
    start: Path,
    scratch: Path,
    rng: random.Random,
    reader: ReaderChild,
) -> tuple[CompactTrial | None, Reads]:
    """One kill during `compact` and its checks; None if the run finished before the kill."""
    root = _fresh_copy(start, scratch / f"compact-{index:03d}")
    before = placement(root)
    debris_before = set(unreferenced_entries(root))
    groups = -(-len(before.level_zero()) // setup.group)
    moment = draw_compact_moment(rng, timeline, groups)
    run, watch, reads = watched_compaction(root, setup.group, reader, moment)
    if run.killed_at is None:
        shutil.rmtree(root, ignore_errors=True)
        return None, reads
    leftovers = sorted(set(unreferenced_entries(root)) - debris_before)
    checked = check_compaction_kill(ws, setup, root, before, run)
    killed = placement(root)
    _fresh_copy(root, scratch / f"compact-killed-{index:03d}")
    resume_failures, stray, resume_reads = check_compaction_resume(
        ws, setup, timeline, root, reader
    )
    reads.add(resume_reads)
    final = holdings(root)
    shutil.rmtree(root, ignore_errors=True)
    trial = CompactTrial(
        index=index,
        command="compact",
        mode=moment.mode,
        delay_s=round(run.killed_at, 3),
        phase=compaction_phase(watch, groups),
        held_before=len(before.shards),
        reported_done=reported_compacted(run),
        held_after_kill=len(checked.held.ids),
        leftovers_after_kill=leftovers,
        clean_reopen=checked.clean_reopen,
        lost=sorted(set(ws.order) - set(checked.held.ids)) + sorted(set(ws.order) - set(final.ids)),
        duplicated=sorted(set(_duplicates(checked.held) + _duplicates(final))),
        resumed=not resume_failures,
        stray_after_resume=stray,
        failures=checked.failures + resume_failures,
        compacted_before=len(before.compacted_documents()),
        compacted_after_kill=len(killed.compacted_documents()),
        reader_calls=reads.attempts,
        reader_errors=reads.errors,
    )
    return trial, reads


@dataclass
class CompactResults:
    trials: list[CompactTrial] = field(default_factory=list)
    finished_first: int = 0
    reads: Reads = field(default_factory=Reads)
    uninterrupted_s: float = 0.0
    group: int = 0


def _compact_trials(
    ws: Workspace,
    scratch: Path,
    count: int,
    group: int,
    rng: random.Random,
    progress: bool,
    reader: ReaderChild,
) -> CompactResults:
    results = CompactResults(group=group)
    if count <= 0:
        return results
    setup = prepare_compaction(ws, scratch, group)
    timeline, reads = calibrate_compaction(setup, scratch, reader)
    results.reads.add(reads)
    results.uninterrupted_s = round(timeline.run_s(len(timeline.groups)), 2)
    pool = [setup.full]
    while len(results.trials) < count:
        index = len(results.trials) + results.finished_first
        # Half the runs compact every document; the others resume what a kill left.
        start = setup.full if rng.random() < FRESH_COMPACTIONS else rng.choice(pool)
        trial, reads = run_compact_trial(index, ws, setup, timeline, start, scratch, rng, reader)
        results.reads.add(reads)
        if trial is None:
            results.finished_first += 1
            continue
        results.trials.append(trial)
        left = trial.held_after_kill - trial.compacted_after_kill
        keep = left >= 2 and not trial.failures
        _grow_pool(pool, scratch / f"compact-killed-{index:03d}", keep, rng)
        _say(progress, trial)
    return results


# --- the whole harness ------------------------------------------------------------------------
@dataclass
class HarnessReport:
    kills: int
    clean_reopens: int
    resumed_complete: int
    lost_documents: int
    duplicated_documents: int
    stray_after_next_writer: int
    kills_per_phase: dict[str, int]
    forget_kills_per_phase: dict[str, int]
    kills_per_mode: dict[str, int]
    kills_leaving_debris: int
    runs_finished_before_kill: int
    forget_kills: int
    compact_kills: int
    compact_kills_per_phase: dict[str, int]
    compact_kills_per_mode: dict[str, int]
    compact_runs_finished_before_kill: int
    compact_group: int
    ingest_reader_calls: int
    ingest_reader_errors: int
    forget_reader_calls: int
    forget_reader_errors: int
    reader_calls: int
    """`ParametricMemory.open(path).ask(...)` calls during compaction runs."""
    reader_errors: int
    reader_error_messages: dict[str, int]
    """Distinct reader errors during every child run, each after the child's command."""
    wall_time_s: float
    documents: int
    uninterrupted_ingest_s: float
    uninterrupted_compaction_s: float
    machine: str
    command: str
    failures: list[str]
    trials: list[dict]


def run_harness(
    kills: int = 100,
    seed: int = 0,
    workdir: Path | None = None,
    documents: int = 5,
    forget_kills: int = 0,
    progress: bool = False,
    compact_kills: int = 0,
    compact_group: int = 2,
) -> HarnessReport:
    started = time.monotonic()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="pm-crash-", dir=workdir) as temp:
        scratch = Path(temp)
        ws = prepare(scratch / "workspace", documents)
        reader = ReaderChild(reader_questions(ws), scratch / "reader.log")
        try:
            ingest_reads, forget_reads = Reads(), Reads()
            timeline = Timeline({}, 0.0)
            if kills > 0:
                timeline = calibrate(ws, scratch, reader, ingest_reads)
            pool = [ws.empty_memory]
            trials: list[Trial] = []
            finished_first = 0
            while len(trials) < kills:
                index = len(trials) + finished_first
                trial, reads = run_trial(
                    index, ws, timeline, rng.choice(pool), scratch, rng, reader
                )
                ingest_reads.add(reads)
                if trial is None:
                    finished_first += 1
                    continue
                trials.append(trial)
                keep = 0 < trial.held_after_kill < len(ws.order) and not trial.failures
                _grow_pool(pool, scratch / f"killed-{trial.index:03d}", keep, rng)
                _say(progress, trial)
            forget_trials = _forget_trials(
                ws, scratch, forget_kills, rng, progress, reader, forget_reads
            )
            compacted = _compact_trials(
                ws, scratch, compact_kills, compact_group, rng, progress, reader
            )
        finally:
            reader.close()
    reads = {"ingest": ingest_reads, "forget": forget_reads, "compact": compacted.reads}
    return _report(
        ws, timeline, trials, forget_trials, compacted, reads, finished_first, started, kills, seed
    )


def _grow_pool(pool: list[Path], state: Path, keep: bool, rng: random.Random) -> None:
    """Later trials may start from what this kill left (held documents, debris and all)."""
    if not keep:
        shutil.rmtree(state, ignore_errors=True)
        return
    if len(pool) < POOL_SIZE:
        pool.append(state)
        return
    replaced = rng.randrange(1, POOL_SIZE)  # the empty memory at 0 always stays
    shutil.rmtree(pool[replaced], ignore_errors=True)
    pool[replaced] = state


def _forget_trials(
    ws: Workspace,
    scratch: Path,
    count: int,
    rng: random.Random,
    progress: bool,
    reader: ReaderChild,
    reads: Reads,
) -> list[Trial]:
    if count <= 0:
        return []
    full = _fresh_copy(ws.empty_memory, scratch / "full-memory")
    code, stdout = CliRun(ingest_args(ws, full)).finish()
    if code != 0:
        raise RuntimeError(f"ingest for the forget trials failed: {stdout}")
    timing_root = _fresh_copy(full, scratch / "forget-timing")
    with reader.reading(timing_root, reads):
        timing = CliRun(["forget", ws.order[0], "--memory", str(timing_root)])
        locked_at = wait_for_lock(timing, timing_root)
        # Forgetting the first document retrains its shard; half as long again reaches into
        # the removal of the old state and the exit.
        locked_s = 1.5 * (wait_for_commit(timing, timing_root) - locked_at)
        timing.finish()
    trials: list[Trial] = []
    attempt = 0
    while len(trials) < count:
        trial, attempt_reads = run_forget_trial(attempt, ws, full, scratch, rng, locked_s, reader)
        reads.add(attempt_reads)
        attempt += 1
        if trial is not None:
            trials.append(trial)
            _say(progress, trial)
    return trials


def _say(progress: bool, trial: Trial) -> None:
    if progress:
        verdict = "ok" if not trial.failures else f"FAILED: {trial.failures}"
        counts = f"held {trial.held_before}->{trial.held_after_kill}"
        if isinstance(trial, CompactTrial):
            counts = f"compacted {trial.compacted_before}->{trial.compacted_after_kill}"
        counts += f", reader {len(trial.reader_errors)}/{trial.reader_calls} failed"
        print(
            f"kill {trial.index:3d} {trial.command:<16} {trial.mode:<7} {trial.delay_s:6.2f}s "
            f"{trial.phase:<12} {counts} {verdict}",
            file=sys.stderr,
            flush=True,
        )


def _report(
    ws: Workspace,
    timeline: Timeline,
    trials: list[Trial],
    forget_trials: list[Trial],
    compacted: CompactResults,
    reads: dict[str, Reads],
    finished_first: int,
    started: float,
    kills: int,
    seed: int,
) -> HarnessReport:
    every = trials + forget_trials + compacted.trials
    phases = Counter(t.phase for t in trials)
    forget_phases = Counter(t.phase for t in forget_trials)
    compact_phases = Counter(t.phase for t in compacted.trials)
    return HarnessReport(
        kills=len(trials),
        clean_reopens=sum(t.clean_reopen for t in every),
        resumed_complete=sum(t.resumed for t in every),
        lost_documents=sum(len(t.lost) for t in every),
        duplicated_documents=sum(len(t.duplicated) for t in every),
        stray_after_next_writer=sum(bool(t.stray_after_resume) for t in every),
        kills_per_phase={phase: phases.get(phase, 0) for phase in PHASES},
        forget_kills_per_phase={p: forget_phases[p] for p in PHASES if forget_phases[p]},
        kills_per_mode=dict(Counter(t.mode for t in trials)),
        kills_leaving_debris=sum(bool(t.leftovers_after_kill) for t in every),
        runs_finished_before_kill=finished_first,
        forget_kills=len(forget_trials),
        compact_kills=len(compacted.trials),
        compact_kills_per_phase={p: compact_phases[p] for p in COMPACT_PHASES},
        compact_kills_per_mode=dict(Counter(t.mode for t in compacted.trials)),
        compact_runs_finished_before_kill=compacted.finished_first,
        compact_group=compacted.group,
        ingest_reader_calls=reads["ingest"].attempts,
        ingest_reader_errors=len(reads["ingest"].errors),
        forget_reader_calls=reads["forget"].attempts,
        forget_reader_errors=len(reads["forget"].errors),
        reader_calls=compacted.reads.attempts,
        reader_errors=len(compacted.reads.errors),
        reader_error_messages=dict(
            Counter(f"{c}: {e}" for c, r in reads.items() for e in r.errors).most_common()
        ),
        wall_time_s=round(time.monotonic() - started, 1),
        documents=len(ws.order),
        uninterrupted_ingest_s=round(timeline.exit_s, 2),
        uninterrupted_compaction_s=compacted.uninterrupted_s,
        machine=_machine(),
        command=_command(kills, seed, len(ws.order), len(forget_trials), compacted),
        failures=[f"kill {t.index} ({t.command}): {f}" for t in every for f in t.failures],
        trials=[asdict(t) for t in every],
    )


def _machine() -> str:
    return (
        f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}, "
        f"Python {platform.python_version()}"
    )


def _command(
    kills: int, seed: int, documents: int, forget_kills: int, compacted: CompactResults
) -> str:
    command = (
        f"python benchmarks/crash_harness.py --kills {kills} --seed {seed} --documents {documents}"
    )
    command += f" --forget-kills {forget_kills}" if forget_kills else ""
    if compacted.trials:
        command += f" --compact-kills {len(compacted.trials)} --compact-group {compacted.group}"
    return command


def markdown(report: HarnessReport) -> str:
    phases = ", ".join(f"{phase} {n}" for phase, n in report.kills_per_phase.items())
    forget_phases = ", ".join(f"{p} {n}" for p, n in report.forget_kills_per_phase.items())
    rows = [
        ("SIGKILLs during `ingest`", report.kills),
        ("SIGKILLs during `forget`", report.forget_kills),
        ("clean reopens (`open` + `verify_memory` with no problem)", report.clean_reopens),
        (
            "rerun completed cleanly (every document once, verifies, no debris left)",
            report.resumed_complete,
        ),
        ("documents lost", report.lost_documents),
        ("documents duplicated", report.duplicated_documents),
        (
            "kills that left debris (staging or stale folders, temp files)",
            report.kills_leaving_debris,
        ),
        ("...debris still there after the next writer", report.stray_after_next_writer),
        ("`ingest` kills per phase (inferred)", phases),
        ("`forget` kills per phase (inferred)", forget_phases or "-"),
        ("runs that finished before their kill (not counted)", report.runs_finished_before_kill),
        (
            "uninterrupted ingest of all documents",
            f"{report.uninterrupted_ingest_s} s" if report.kills else "-",
        ),
        *_reader_rows(
            "`ingest` runs (calibration, kills, reruns)",
            report.ingest_reader_calls,
            report.ingest_reader_errors,
        ),
        *_reader_rows(
            "`forget` runs (timing, kills, reruns)",
            report.forget_reader_calls,
            report.forget_reader_errors,
        ),
        *(_compaction_rows(report) if report.compact_kills else []),
        ("wall time", f"{report.wall_time_s} s"),
    ]
    lines = [
        "# Crash-safety kill harness",
        "",
        f"`{report.command}` on {report.machine}; {report.documents} documents, tiny "
        "random-weight model.",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "Failures: " + ("none" if not report.failures else ""),
        *(f"- {failure}" for failure in report.failures),
        "",
        *_reader_lines(report),
    ]
    return "\n".join(lines)


def _compaction_rows(report: HarnessReport) -> list[tuple[str, object]]:
    phases = ", ".join(f"{p} {n}" for p, n in report.compact_kills_per_phase.items())
    modes = ", ".join(f"{m} {n}" for m, n in report.compact_kills_per_mode.items())
    return [
        (
            f"SIGKILLs during `compact` ({report.compact_group} documents a shard)",
            report.compact_kills,
        ),
        ("`compact` kills per phase (inferred)", phases),
        ("`compact` kills per moment drawn", modes),
        (
            "compaction runs that finished before their kill (not counted)",
            report.compact_runs_finished_before_kill,
        ),
        *_reader_rows("compaction runs", report.reader_calls, report.reader_errors),
        (
            "uninterrupted compaction of all documents (start to exit)",
            f"{report.uninterrupted_compaction_s} s",
        ),
    ]


def _reader_rows(runs: str, calls: int, errors: int) -> list[tuple[str, object]]:
    return [
        (f"reader calls (`ParametricMemory.open(path).ask(...)`) during {runs}", calls),
        ("...of them failed", errors),
    ]


def _reader_lines(report: HarnessReport) -> list[str]:
    """The reader's errors, alike ones counted together: readers never take the lock, so
    none is expected."""
    found = [f"- {n}x `{message}`" for message, n in report.reader_error_messages.items()]
    return ["Reader errors: " + ("none" if not found else ""), *found, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--forget-kills", type=int, default=0)
    parser.add_argument("--compact-kills", type=int, default=0)
    parser.add_argument(
        "--compact-group", type=int, default=2, help="documents per compacted shard (>= 2)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/scratch/crash_harness"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch space (default: tmp)")
    args = parser.parse_args()
    report = run_harness(
        args.kills,
        args.seed,
        args.workdir,
        args.documents,
        args.forget_kills,
        progress=True,
        compact_kills=args.compact_kills,
        compact_group=args.compact_group,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crash_harness.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (args.out / "crash_harness.md").write_text(markdown(report))
    print(markdown(report))
    sys.exit(1 if report.failures or report.reader_error_messages else 0)


if __name__ == "__main__":
    main()
