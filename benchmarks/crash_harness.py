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

    python benchmarks/crash_harness.py --kills 100 --seed 0 --out benchmarks/results/crash_harness
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import platform
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
from collections.abc import Callable
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
    return ["-v", "ingest", str(ws.docs), "--memory", str(memory)]


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


def calibrate(ws: Workspace, scratch: Path) -> Timeline:
    memory = _fresh_copy(ws.empty_memory, scratch / "calibration")
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


@dataclass
class Moment:
    """When to kill: `delay` seconds after `anchor`: the process "start", the start of
    document `doc`, or the end of its transformation ("commit", its `T:` line)."""

    mode: str
    anchor: str
    delay: float
    doc: str = ""
    position: int = 0
    """The document's place among those the run ingests (1 = first)."""


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
    ws: Workspace, timeline: Timeline, root: Path, held_before: int
) -> tuple[list[str], list[str]]:
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
    index: int, ws: Workspace, timeline: Timeline, start: Path, scratch: Path, rng: random.Random
) -> Trial | None:
    """One kill and its checks; None if the run finished before the kill landed."""
    root = _fresh_copy(start, scratch / f"trial-{index:03d}")
    before = holdings(root).ids
    debris_before = set(unreferenced_entries(root))
    moment = draw_moment(rng, timeline, [d for d in ws.order if d not in before])
    run = CliRun(ingest_args(ws, root))
    killed = kill_at(run, moment)
    run.finish()
    if not killed:
        shutil.rmtree(root, ignore_errors=True)
        return None
    leftovers = sorted(set(unreferenced_entries(root)) - debris_before)
    checked = check_after_kill(ws, root, before, run)
    held = checked.held
    _fresh_copy(root, scratch / f"killed-{index:03d}")
    resume_failures, stray = check_resume(ws, timeline, root, len(held.ids))
    final = holdings(root)
    shutil.rmtree(root, ignore_errors=True)
    return Trial(
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
    )


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
    index: int, ws: Workspace, full: Path, scratch: Path, rng: random.Random, locked_s: float
) -> Trial | None:
    """SIGKILL `forget` between taking the lock and a little after its commit."""
    root = _fresh_copy(full, scratch / f"forget-{index:03d}")
    target = rng.choice(ws.order)
    run = CliRun(["-v", "forget", target, "--memory", str(root)])
    wait_for_lock(run, root)
    time.sleep(rng.uniform(0.0, locked_s))
    killed = run.kill()
    run.finish()
    if not killed:
        shutil.rmtree(root, ignore_errors=True)
        return None
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
    rerun = CliRun(["forget", target, "--memory", str(root)])
    code, _ = rerun.finish()
    if code not in (0, 1) or (code == 1 and not gone):
        failures.append(f"rerunning forget exited {code}")
    final = holdings(root)
    if final.ids != sorted(set(ws.order) - {target}) or verify_memory(root):
        failures.append(f"after rerunning forget the memory holds {final.ids}")
    stray = unreferenced_entries(root)
    shutil.rmtree(root, ignore_errors=True)
    return Trial(
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
    )


def _forget_phase(gone: bool, leftovers: list[str]) -> str:
    if leftovers:
        return "save/commit"
    return "exit" if gone else "training"


def _text_on_disk(root: Path, text: str) -> bool:
    needle = text.split(". ")[0].encode("utf-8")
    return any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())


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
    wall_time_s: float
    documents: int
    uninterrupted_ingest_s: float
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
) -> HarnessReport:
    started = time.monotonic()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="pm-crash-", dir=workdir) as temp:
        scratch = Path(temp)
        ws = prepare(scratch / "workspace", documents)
        timeline = calibrate(ws, scratch)
        pool = [ws.empty_memory]
        trials: list[Trial] = []
        finished_first = 0
        while len(trials) < kills:
            trial = run_trial(
                len(trials) + finished_first, ws, timeline, rng.choice(pool), scratch, rng
            )
            if trial is None:
                finished_first += 1
                continue
            trials.append(trial)
            _grow_pool(pool, scratch / f"killed-{trial.index:03d}", trial, len(ws.order), rng)
            _say(progress, trial)
        forget_trials = _forget_trials(ws, scratch, forget_kills, rng, progress)
    return _report(ws, timeline, trials, forget_trials, finished_first, started, kills, seed)


def _grow_pool(pool: list[Path], state: Path, trial: Trial, total: int, rng: random.Random) -> None:
    """Later trials may start from what this kill left (held documents, debris and all)."""
    if not 0 < trial.held_after_kill < total or trial.failures:
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
) -> list[Trial]:
    if count <= 0:
        return []
    full = _fresh_copy(ws.empty_memory, scratch / "full-memory")
    code, stdout = CliRun(ingest_args(ws, full)).finish()
    if code != 0:
        raise RuntimeError(f"ingest for the forget trials failed: {stdout}")
    timing_root = _fresh_copy(full, scratch / "forget-timing")
    timing = CliRun(["forget", ws.order[0], "--memory", str(timing_root)])
    locked_at = wait_for_lock(timing, timing_root)
    # Forgetting the first document retrains its shard; half as long again reaches into
    # the removal of the old state and the exit.
    locked_s = 1.5 * (wait_for_commit(timing, timing_root) - locked_at)
    timing.finish()
    trials: list[Trial] = []
    attempt = 0
    while len(trials) < count:
        trial = run_forget_trial(attempt, ws, full, scratch, rng, locked_s)
        attempt += 1
        if trial is not None:
            trials.append(trial)
            _say(progress, trial)
    return trials


def _say(progress: bool, trial: Trial) -> None:
    if progress:
        verdict = "ok" if not trial.failures else f"FAILED: {trial.failures}"
        print(
            f"kill {trial.index:3d} {trial.command:<16} {trial.mode:<7} {trial.delay_s:6.2f}s "
            f"{trial.phase:<12} held {trial.held_before}->{trial.held_after_kill} {verdict}",
            file=sys.stderr,
            flush=True,
        )


def _report(
    ws: Workspace,
    timeline: Timeline,
    trials: list[Trial],
    forget_trials: list[Trial],
    finished_first: int,
    started: float,
    kills: int,
    seed: int,
) -> HarnessReport:
    every = trials + forget_trials
    phases = Counter(t.phase for t in trials)
    forget_phases = Counter(t.phase for t in forget_trials)
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
        wall_time_s=round(time.monotonic() - started, 1),
        documents=len(ws.order),
        uninterrupted_ingest_s=round(timeline.exit_s, 2),
        machine=_machine(),
        command=_command(kills, seed, len(ws.order), len(forget_trials)),
        failures=[f"kill {t.index} ({t.command}): {f}" for t in every for f in t.failures],
        trials=[asdict(t) for t in every],
    )


def _machine() -> str:
    return (
        f"{platform.machine()} {os.cpu_count()}-core CPU, {platform.system()}, "
        f"Python {platform.python_version()}"
    )


def _command(kills: int, seed: int, documents: int, forget_kills: int) -> str:
    command = (
        f"python benchmarks/crash_harness.py --kills {kills} --seed {seed} --documents {documents}"
    )
    return command + (f" --forget-kills {forget_kills}" if forget_kills else "")


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
        ("uninterrupted ingest of all documents", f"{report.uninterrupted_ingest_s} s"),
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
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--forget-kills", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/scratch/crash_harness"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch space (default: tmp)")
    args = parser.parse_args()
    report = run_harness(
        args.kills, args.seed, args.workdir, args.documents, args.forget_kills, progress=True
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crash_harness.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (args.out / "crash_harness.md").write_text(markdown(report))
    print(markdown(report))
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
