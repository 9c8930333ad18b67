"""Hostile memory folders and bad arguments.

- a memory folder is data: no path its manifest names may lead outside it, through a
  symlink, or to anything but a regular file, and nothing is read or written through one;
- special files (FIFOs, /dev/zero) are refused, never waited on;
- `verify` refuses adapter weights holding NaN or infinity;
- a generation that fails or stalls ends its stream with an error instead of hanging;
- bad `max_new_tokens` and over-long questions are refused first, in one line;
- text without indexable words (stopwords, single digits) can be held and asked about.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_model import FACTS, NEW_FACT, tiny_memory_config

from parametric_memory import (
    InvalidDocumentError,
    MemoryConfig,
    ModelLoadError,
    ParametricMemory,
    cli,
    store,
)
from parametric_memory import memory as memory_module
from parametric_memory.engine import generation
from parametric_memory.errors import (
    CorruptMemoryError,
    GenerationTimeoutError,
    InvalidArgumentError,
)
from parametric_memory.memory import MAX_NEW_TOKENS, MAX_QUERY_CHARS, check_max_new_tokens
from parametric_memory.records import Chunk
from parametric_memory.routing import ShardRouter
from parametric_memory.store.verify import verify_memory

QUESTION = "When is the lantern festival?"
HANG_LIMIT_S = 60


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory, tiny_model_dir) -> Path:
    """A sound memory of two documents in two shards, so that routing is used."""
    root = tmp_path_factory.mktemp("hostile") / "memory"
    memory = ParametricMemory.create(root, tiny_memory_config(tiny_model_dir))
    memory.add_documents(list(FACTS.values()), ids=list(FACTS), progress=False)
    assert memory.info().shards == 2
    assert verify_memory(root) == []
    return root


@pytest.fixture(scope="module")
def opened(two_shards) -> ParametricMemory:
    """The sound memory, opened once for tests that only read it."""
    return ParametricMemory.open(two_shards)


# --- helpers ------------------------------------------------------------------------------
def copy_memory(source: Path, parent: Path) -> Path:
    return Path(shutil.copytree(source, parent / "memory", symlinks=True))


def edit_manifest(root: Path, change: Callable[[dict], None]) -> None:
    path = root / store.MANIFEST_FILE
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def state_of(root: Path) -> str:
    return json.loads((root / store.MANIFEST_FILE).read_text())["state"]


def entries(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root`, symlinks not followed: file bytes, or a link's target."""
    found: dict[str, bytes | str] = {}
    for folder, names, files in os.walk(root):
        for name in names + files:
            path = Path(folder) / name
            if path.is_symlink():
                found[str(path.relative_to(root))] = os.readlink(path)
            elif path.is_file() and name not in {store.LOCK_FILE, store.LOCK_OWNER_FILE}:
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def run_cli(*args: str) -> tuple[int, str]:
    """`parametric-memory ARGS` in this process: the exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, err.getvalue()


def assert_one_line_error(code: int, stderr: str, fragment: str = "") -> None:
    assert code == 1, stderr
    assert stderr.startswith("parametric-memory: error: ") and stderr.count("\n") == 1, stderr
    assert fragment in stderr, stderr


def within(call: Callable[[], object], seconds: float = HANG_LIMIT_S) -> object:
    """What `call()` returned or raised; fails the test, instead of hanging, if it blocks."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still blocked after {seconds} s")
    return outcome[0]


READ_A_MEMORY = """
import json, sys
from parametric_memory import ParametricMemory
from parametric_memory.store.verify import verify_memory
problems = verify_memory(sys.argv[1])
try:
    ParametricMemory.open(sys.argv[1])
    opened = "opened"
except Exception as error:
    opened = type(error).__name__
print(json.dumps({"problems": problems, "open": opened}))
"""


def read_in_a_process(root: Path) -> dict:
    """`verify_memory` and `ParametricMemory.open` of `root` in a child process, killed if
    it blocks: a read blocked in native code (safetensors opening a FIFO) holds the GIL, so
    a thread of this process could not time out."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", READ_A_MEMORY, str(root)],
            capture_output=True,
            text=True,
            timeout=HANG_LIMIT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {root} still blocked after {HANG_LIMIT_S} s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def no_generation() -> Iterator[None]:
    """Fail the test if anything is generated: bad arguments must be refused before that."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model generated for a call that should have been refused")

    with (
        mock.patch.object(memory_module, "generate", refuse),
        mock.patch.object(memory_module, "stream", refuse),
    ):
        yield


# --- 1. nothing is written outside the folder -------------------------------------------------
def plant_escape(root: Path, tmp_path: Path) -> Path:
    """A symlink in shard 0 plus a manifest key through it with `..`: the path the write of
    the next commit (carrying shard 0 over) ends at, outside the memory."""
    state = state_of(root)
    through = tmp_path / "outside" / "a" / "b" / "c" / "d"
    through.mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "pwned.txt").write_text("written by the folder's author")
    (root / state / "shards" / "0000" / "evil").symlink_to(through, target_is_directory=True)
    key = f"{state}/shards/0000/evil/../../../../../victim/pwned.txt"
    edit_manifest(root, lambda raw: raw["files"].update({key: "0" * 64}))
    return root.parent / "victim"


def test_an_ingest_never_writes_outside_through_a_planted_symlink(two_shards, tmp_path):
    root = copy_memory(two_shards, tmp_path / "m")
    escape = plant_escape(root, tmp_path)
    before = entries(root)
    document = tmp_path / "tarrow.md"
    document.write_text(NEW_FACT)
    assert_one_line_error(*run_cli("ingest", str(document), "--memory", str(root)), "evil")
    assert not escape.exists()
    assert entries(root) == before


def test_a_writer_rechecks_the_manifest_it_commits_over(two_shards, tmp_path):
    root = copy_memory(two_shards, tmp_path / "m")
    memory = ParametricMemory.open(root)
    escape = plant_escape(root, tmp_path)  # after open: the writer's refresh must see it
    with pytest.raises(CorruptMemoryError, match="evil"):
        memory.add_documents([NEW_FACT], ids=["tarrow.md"], progress=False)
    with pytest.raises(CorruptMemoryError, match="evil"):
        memory.delete_document("quillhaven.md", progress=False)
    assert not escape.exists()


def test_a_symlinked_lock_owner_file_is_never_written_through(two_shards, tmp_path):
    root = copy_memory(two_shards, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (root / store.LOCK_OWNER_FILE).symlink_to(victim)
    memory = ParametricMemory.open(root)
    with pytest.raises(CorruptMemoryError, match="symlink"):
        memory.add_documents([NEW_FACT], ids=["tarrow.md"], progress=False)
    assert victim.read_text() == "keep me"


# --- 2. no path the manifest names leads outside ---------------------------------------------
def _outside_state(root: Path, raw: dict) -> None:
    """`state` as an absolute path to a complete copy of the state outside the memory."""
    outside = root.parent / "elsewhere" / raw["state"]
    shutil.copytree(root / raw["state"], outside)
    raw["files"] = {
        relative.replace(raw["state"], str(outside), 1): digest
        for relative, digest in raw["files"].items()
    }
    raw["state"] = str(outside)


def _symlinked_state(root: Path, raw: dict) -> None:
    """The state folder moved outside, a symlink of its name in its place."""
    outside = root.parent / "elsewhere"
    outside.mkdir()
    (root / raw["state"]).rename(outside / raw["state"])
    (root / raw["state"]).symlink_to(outside / raw["state"], target_is_directory=True)


def _extra_file(key: str) -> Callable[[Path, dict], None]:
    def add(root: Path, raw: dict) -> None:
        secret = root.parent / "secret.txt"
        secret.write_text("not the memory's")
        raw["files"][key.format(state=raw["state"])] = "0" * 64

    return add


HOSTILE_MANIFESTS = {
    "absolute-state": _outside_state,
    "symlinked-state": _symlinked_state,
    "state-not-a-state-name": lambda root, raw: raw.update(state="shards"),
    "state-with-dot-dot": lambda root, raw: raw.update(state=f"{raw['state']}/.."),
    "files-with-dot-dot": _extra_file("{state}/../../secret.txt"),
    "files-absolute": _extra_file("/etc/hostname"),
    "files-backslash": _extra_file("{state}\\..\\..\\secret.txt"),
    "files-drive": _extra_file("C:/secret.txt"),
    "files-empty-part": _extra_file("{state}//chunks.jsonl"),
    "files-dot-part": _extra_file("{state}/./chunks.jsonl"),
    "files-outside-the-state": _extra_file("other/secret.txt"),
    "files-control-character": _extra_file("{state}/chunks.jsonl\nok"),
    "files-without-a-state": lambda root, raw: raw.update(state=None),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE_MANIFESTS))
def test_a_manifest_naming_paths_outside_is_refused_by_every_reader(two_shards, tmp_path, hostile):
    root = copy_memory(two_shards, tmp_path)
    edit_manifest(root, lambda raw: HOSTILE_MANIFESTS[hostile](root, raw))
    hashed: list[Path] = []
    real_hash = store.file_sha256

    def spy(path: Path) -> str:
        hashed.append(Path(path))
        return real_hash(path)

    with mock.patch.object(store, "file_sha256", spy):
        problems = verify_memory(root)
    assert len(problems) == 1 and "\n" not in problems[0], problems
    assert hashed == []
    with pytest.raises(CorruptMemoryError) as refused:
        ParametricMemory.open(root)
    assert "\n" not in str(refused.value)
    assert_one_line_error(*run_cli("info", "--memory", str(root)))


# --- 3. special files are refused, not waited on ---------------------------------------------
def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


SPECIAL_FILES = {
    "chunks-to-dev-zero": (store.CHUNKS_FILE, _dev_zero),
    "transfer-set-fifo": (store.TRANSFER_SET_FILE, _fifo),
    "adapter-fifo": (f"shards/0001/{store.ADAPTER_WEIGHTS_NAME}", _fifo),
    "adapter-to-dev-zero": (f"shards/0001/{store.ADAPTER_WEIGHTS_NAME}", _dev_zero),
    "chunks-a-folder": (store.CHUNKS_FILE, _folder),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero")
@pytest.mark.parametrize("special", sorted(SPECIAL_FILES))
def test_special_files_in_a_state_are_refused_without_hanging(two_shards, tmp_path, special):
    root = copy_memory(two_shards, tmp_path)
    name, make = SPECIAL_FILES[special]
    make(root / state_of(root) / name)
    outcome = read_in_a_process(root)
    assert len(outcome["problems"]) == 1, outcome
    assert name in outcome["problems"][0] and "\n" not in outcome["problems"][0]
    assert outcome["open"] == CorruptMemoryError.__name__


# --- 4. verify refuses non-finite adapter weights --------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_verify_names_adapter_weights_that_are_not_finite(two_shards, tmp_path, value, dtype):
    root = copy_memory(two_shards, tmp_path)
    relative = f"{state_of(root)}/shards/0001/{store.ADAPTER_WEIGHTS_NAME}"
    weights = {key: tensor.to(dtype) for key, tensor in load_file(root / relative).items()}
    poisoned = sorted(key for key in weights if "lora_B" in key)[0]
    weights[poisoned].view(-1)[0] = value
    save_file(weights, root / relative)
    digest = store.file_sha256(root / relative)
    edit_manifest(root, lambda raw: raw["files"].update({relative: digest}))
    problems = verify_memory(root)
    assert len(problems) == 1, problems
    assert relative in problems[0] and poisoned in problems[0] and "NaN" in problems[0]


def test_verify_passes_finite_bfloat16_weights(two_shards, tmp_path):
    root = copy_memory(two_shards, tmp_path)
    relative = f"{state_of(root)}/shards/0001/{store.ADAPTER_WEIGHTS_NAME}"
    weights = {k: t.to(torch.bfloat16) for k, t in load_file(root / relative).items()}
    save_file(weights, root / relative)
    digest = store.file_sha256(root / relative)
    edit_manifest(root, lambda raw: raw["files"].update({relative: digest}))
    assert verify_memory(root) == []


# --- 5. a failing or stalled generation ends its stream ----------------------------------------
def test_a_failing_generation_ends_the_stream_with_its_error(opened, monkeypatch):
    def broken(**kwargs: object) -> None:
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(opened.model.model, "generate", broken)
    outcome = within(lambda: list(opened.stream(QUESTION, max_new_tokens=4)))
    assert isinstance(outcome, RuntimeError) and "fell over" in str(outcome)
    monkeypatch.undo()
    assert isinstance(within(lambda: opened.ask(QUESTION, max_new_tokens=2)), str)


def test_a_stalled_generation_times_out_and_frees_the_memory(opened, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(generation, "STREAM_TIMEOUT_S", 0.5)
    monkeypatch.setattr(opened.model.model, "generate", lambda **kwargs: release.wait(30))
    try:
        outcome = within(lambda: list(opened.stream(QUESTION, max_new_tokens=4)))
        assert isinstance(outcome, GenerationTimeoutError)
        assert "\n" not in str(outcome)
    finally:
        release.set()
    monkeypatch.undo()
    assert isinstance(within(lambda: opened.ask(QUESTION, max_new_tokens=2)), str)


def test_closing_a_stream_early_stops_its_generation(opened, monkeypatch):
    finished = threading.Event()
    real_generate = opened.model.model.generate

    def watched(**kwargs: object) -> object:
        try:
            return real_generate(**kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(opened.model.model, "generate", watched)
    pieces = opened.stream(QUESTION, max_new_tokens=MAX_NEW_TOKENS // 4)
    next(pieces)
    pieces.close()
    assert finished.is_set()  # the generation ended before the model lock was released


# --- 6. bad max_new_tokens and over-long questions are refused first ------------------------
CALLS = {
    "ask": lambda m, q, n: m.ask(q, max_new_tokens=n),
    "ask_batch": lambda m, q, n: m.ask_batch([q], max_new_tokens=n),
    "stream": lambda m, q, n: m.stream(q, max_new_tokens=n),
    "recall": lambda m, q, n: m.recall(q, max_new_tokens=n),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("value", [0, -1, "8", 2.5, True, None, MAX_NEW_TOKENS + 1, 10**9])
def test_a_bad_max_new_tokens_is_refused_first(opened, call, value):
    with no_generation(), pytest.raises(InvalidArgumentError) as refused:
        CALLS[call](opened, QUESTION, value)
    message = str(refused.value)
    assert "\n" not in message and repr(value) in message and str(MAX_NEW_TOKENS) in message


def test_max_new_tokens_takes_the_whole_allowed_range():
    assert check_max_new_tokens(1) == 1
    assert check_max_new_tokens(MAX_NEW_TOKENS) == MAX_NEW_TOKENS


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(
    "question",
    ["x" * (MAX_QUERY_CHARS + 1), "lantern festival " * 1200],  # characters; tokens > context
    ids=["too-many-characters", "too-many-tokens"],
)
def test_a_question_longer_than_the_context_is_refused_first(opened, call, question):
    with no_generation(), pytest.raises(InvalidDocumentError) as refused:
        list(CALLS[call](opened, question, 8))
    assert "\n" not in str(refused.value)


def test_a_question_that_fits_only_without_the_answer_is_refused(opened):
    context = opened.model.model.config.max_position_embeddings
    with no_generation(), pytest.raises(InvalidDocumentError, match="max_new_tokens"):
        opened.ask("lantern " * (context // 2), max_new_tokens=context // 2)


def test_ask_batch_refuses_one_string_for_a_list(opened):
    with no_generation(), pytest.raises(InvalidArgumentError, match="ask"):
        opened.ask_batch(QUESTION)


@pytest.mark.parametrize("command", ["ask", "recall"])
@pytest.mark.parametrize("value", ["0", "-1", "2.5", "eight", "", str(10**9)])
def test_the_cli_refuses_a_bad_max_new_tokens_in_one_line_before_loading(
    two_shards, command, value
):
    def refuse(config: MemoryConfig, **options) -> None:
        raise AssertionError("the model was loaded for a refused --max-new-tokens")

    with mock.patch.object(memory_module, "load_model", refuse):
        code, stderr = run_cli(
            command, QUESTION, "--memory", str(two_shards), "--max-new-tokens", value
        )
    assert_one_line_error(code, stderr, "max_new_tokens")


@pytest.mark.parametrize("value", ["0", "17", "2.5", "three", ""])
def test_the_cli_refuses_a_bad_rerank_in_one_line_before_loading(two_shards, value):
    def refuse(config: MemoryConfig, **options) -> None:
        raise AssertionError("the model was loaded for a refused --rerank")

    with mock.patch.object(memory_module, "load_model", refuse):
        code, stderr = run_cli("ask", QUESTION, "--memory", str(two_shards), "--rerank", value)
    assert_one_line_error(code, stderr, "--rerank")


def test_the_cli_refuses_an_over_long_question_in_one_line(two_shards):
    code, stderr = run_cli("ask", "x" * (MAX_QUERY_CHARS + 1), "--memory", str(two_shards))
    assert_one_line_error(code, stderr, "MAX_QUERY_CHARS")


# --- 7. text without indexable words ---------------------------------------------------------
WORDLESS = ["To be or not to be.", "1 2 3. 4 5 6."]


def test_the_router_takes_chunks_and_queries_without_words():
    chunks = [Chunk(f"c{i}", f"d{i}", 0, text, 4) for i, text in enumerate(WORDLESS)]
    router = ShardRouter(chunks, {"d0": 0, "d1": 1})
    assert router.shards_for(["to be", "What is it?", "?"]) == [1, 1, 1]
    assert router.documents_for("or not", limit=3) == []


def test_a_memory_of_wordless_documents_answers(tmp_path, tiny_config):
    memory = ParametricMemory.create(tmp_path / "memory", tiny_config)
    memory.add_documents(WORDLESS, ids=["hamlet.md", "digits.md"], progress=False)
    assert memory.info().shards == 2
    assert isinstance(memory.ask("To be?", max_new_tokens=3), str)
    assert isinstance(memory.ask("Brindlewick payroll?", max_new_tokens=3), str)
    assert memory.recall("to be", max_new_tokens=3).document_ids == []
    assert isinstance("".join(memory.stream("or not", max_new_tokens=3)), str)
    memory.delete_document("digits.md", progress=False)
    assert isinstance(memory.ask("To be?", max_new_tokens=3), str)
    assert verify_memory(memory.root) == []


def test_a_manifest_naming_a_hub_model_never_makes_open_download_it(two_shards, tmp_path):
    """Only the local cache is searched unless the caller allows downloads: the load fails
    at once, naming the way to allow them, instead of reaching for the hub."""
    root = tmp_path / "memory"
    shutil.copytree(two_shards, root)
    manifest = json.loads((root / store.MANIFEST_FILE).read_text())
    manifest["config"]["model"] = "example-org/a-model-nobody-has-cached"
    (root / store.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="allow_downloads=True"):
        ParametricMemory.open(root)
