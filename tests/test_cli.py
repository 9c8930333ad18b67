"""The `parametric-memory` command line, run in this process on the tiny model: help and
examples, --version, progress bars, --config and --device, `list`, and the one-line errors
(exit code 2 for usage errors) for a --model other than the memory's and non-text files."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from tiny_model import FACTS, NEW_FACT, tiny_memory_config

import parametric_memory
from parametric_memory import cli, store
from parametric_memory import memory as memory_module

CLI_ERROR = "parametric-memory: error: "


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str | Path) -> CliResult:
    """`parametric-memory ARGS` in this process, its stderr a file (not a terminal)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: CliResult, code: int, fragment: str = "") -> None:
    assert result.code == code, result
    assert result.stderr.startswith(CLI_ERROR), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr, result.stderr


def write_config(path: Path, fields: dict) -> Path:
    path.write_text(json.dumps(fields))
    return path


@contextlib.contextmanager
def no_model_loads() -> Iterator[None]:
    """Fail the test if a base model is loaded: bad input is refused before that."""

    def refuse(config, **options):
        raise AssertionError(f"the model was loaded for {config.model!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memory_module, "load_model", refuse)
        yield


@pytest.fixture(scope="module")
def tiny_fields(tiny_model_dir) -> dict:
    return tiny_memory_config(tiny_model_dir).model_dump(mode="json")


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name, text in FACTS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, docs, tiny_fields) -> tuple[Path, CliResult]:
    """A memory made by `ingest --config` of the two facts; tests that write use a copy."""
    folder = tmp_path_factory.mktemp("held")
    config = write_config(folder / "memory.json", tiny_fields)
    root = folder / "memory"
    result = run_cli("ingest", docs, "--memory", root, "--config", config)
    assert result.code == 0, result
    return root, result


@pytest.fixture
def held(ingested, tmp_path) -> Path:
    return Path(shutil.copytree(ingested[0], tmp_path / "memory", symlinks=True))


# --- 1. help ----------------------------------------------------------------------------
def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def test_every_command_has_examples_and_every_argument_a_help():
    commands = _commands()
    assert {"ingest", "ask", "recall", "list", "info", "verify", "forget", "compact"} <= set(
        commands
    )
    for name, command in commands.items():
        assert command.formatter_class is argparse.RawDescriptionHelpFormatter
        assert f"examples:\n  parametric-memory {name} " in command.epilog
        assert all(action.help for action in command._actions), name
    assert all(action.help for action in cli._parser()._actions)


def test_command_help_shows_its_examples_as_written(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["ingest", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "\n  parametric-memory ingest notes/ --memory ./memory\n" in out
    assert "--config FILE" in out and "--quiet" in out


# --- 2. --version -----------------------------------------------------------------------
def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"parametric-memory {metadata.version('parametric-memory')}\n"


def test_version_falls_back_to_the_source_trees(monkeypatch):
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", not_installed)
    assert cli.package_version() == parametric_memory.__version__


# --- 3. and 8. progress bars --------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--quiet", "-q", "--no-progress"])
@pytest.mark.parametrize(
    "command", [["ingest", "a.md"], ["forget", "a.md"], ["compact"]], ids=lambda c: c[0]
)
def test_commands_that_show_progress_take_quiet(command, flag):
    args = cli._parser().parse_args([*command, "--memory", "m", flag])
    assert args.progress is False


def test_bars_only_on_a_terminal_and_without_quiet(monkeypatch):
    args = argparse.Namespace(progress=None)  # neither --quiet nor --progress
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert cli._progress(args) is False
    assert cli._progress(argparse.Namespace(progress=True)) is True  # --progress
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert cli._progress(args) is True
    assert cli._progress(argparse.Namespace(progress=False)) is False


def test_progress_draws_bars_off_a_terminal_for_tools_that_read_them(held, tmp_path, capsys):
    new = tmp_path / "tarrow.md"
    new.write_text(NEW_FACT)
    assert cli.main(["ingest", str(new), "--memory", str(held), "--progress"]) == 0
    assert "100%" in capsys.readouterr().err  # a bar, drawn to the end


def test_no_progress_frames_when_stderr_is_not_a_terminal(ingested):
    _, result = ingested
    assert "added 2 document(s)" in result.stdout
    assert result.stderr == ""  # no `\r` frames, no warnings


def test_quiet_draws_no_bar_on_a_terminal(held, tmp_path, capsys, monkeypatch):
    new = tmp_path / "tarrow.md"
    new.write_text(NEW_FACT)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert cli.main(["ingest", str(new), "--memory", str(held), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "added 1 document(s)" in captured.out
    assert "\r" not in captured.err and "consolidating" not in captured.err


# --- 4. --config and --device -------------------------------------------------------------
def test_config_and_device_make_a_new_memory(tmp_path, docs, tiny_fields):
    fields = {**tiny_fields, "seed": 7, "sharding": {"documents_per_shard": 2}}
    config = write_config(tmp_path / "memory.json", fields)
    root = tmp_path / "memory"
    doc = docs / "quillhaven.md"
    result = run_cli("ingest", doc, "--memory", root, "--config", config, "--device", "cpu")
    assert result.code == 0, result
    held = store.read_manifest(root).config
    assert (held.seed, held.sharding.documents_per_shard, held.device) == (7, 2, "cpu")
    assert held.consolidation.lora_rank == tiny_fields["consolidation"]["lora_rank"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read it"),
        ("{oops", "not valid JSON"),
        ("[1, 2]", "expected an object of MemoryConfig fields, got list"),
        ('{"colour": "red"}', "colour: Extra inputs are not permitted"),
        ('{"seed": -1}', "seed: Input should be greater than or equal to 0"),
        ('{"consolidation": {"lora_rank": "many"}}', "consolidation.lora_rank"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, docs, content, fragment):
    config = tmp_path / "memory.json"
    if content is not None:
        config.write_text(content)
    with no_model_loads():
        result = run_cli("ingest", docs, "--memory", tmp_path / "m", "--config", config)
    assert_one_line_error(result, 2, fragment)
    assert str(config) in result.stderr
    assert not (tmp_path / "m").exists()


def test_a_yaml_config_is_read_too(tmp_path, tiny_model_dir):
    pytest.importorskip("yaml")
    config = tmp_path / "memory.yaml"
    config.write_text(f"model: {tiny_model_dir}\nseed: 3\nchunking:\n  chunk_tokens: 64\n")
    argv = ["ingest", "a.md", "--memory", "m", "--config", str(config), "--device", "cpu"]
    fields = cli._requested_fields(cli._parser().parse_args(argv))
    chunking = {"chunk_tokens": 64}
    assert fields == {
        "model": str(tiny_model_dir),
        "seed": 3,
        "chunking": chunking,
        "device": "cpu",
    }


def test_another_config_for_an_existing_memory_is_exit_2(held, tmp_path, docs, tiny_fields):
    before = (held / store.MANIFEST_FILE).read_bytes()
    config = write_config(tmp_path / "other.json", {**tiny_fields, "seed": 9})
    with no_model_loads():
        result = run_cli("ingest", docs, "--memory", held, "--config", config)
    assert_one_line_error(result, 2, "--config applies to a new memory")
    assert (held / store.MANIFEST_FILE).read_bytes() == before


def test_device_reaches_the_model_of_an_existing_memory(ingested):
    root, _ = ingested
    assert_one_line_error(run_cli("info", "--memory", root, "--device", "nowhere:7"), 1, "nowhere")
    result = run_cli("info", "--memory", root, "--device", "cpu")
    assert result.code == 0 and json.loads(result.stdout)["documents"] == 2


# --- 5. list ------------------------------------------------------------------------------
def test_list_shows_each_document_its_source_and_shard(ingested, docs):
    root, _ = ingested
    shards = {d: r.shard for d, r in store.read_manifest(root).documents.items()}
    with no_model_loads():
        result = run_cli("list", "--memory", root)
    assert result.code == 0, result
    assert result.stdout.splitlines() == [
        f"{name}\tshard {shards[name]}\tsource={docs / name}" for name in sorted(FACTS)
    ]


def test_list_json_is_the_documents_records(ingested, docs):
    root, _ = ingested
    with no_model_loads():
        listed = json.loads(run_cli("list", "--memory", root, "--json").stdout)
    assert [d["id"] for d in listed] == sorted(FACTS)
    assert all(d["metadata"] == {"source": str(docs / d["id"])} for d in listed)
    assert {d["shard"] for d in listed} == {0, 1}
    assert all(d["chunks"] >= 1 and d["transfer_items"] >= 1 for d in listed)


# --- 6. --model on an existing memory -----------------------------------------------------
def test_another_model_for_an_existing_memory_is_exit_2(held, docs, tmp_path):
    before = (held / store.MANIFEST_FILE).read_bytes()
    with no_model_loads():
        result = run_cli("ingest", docs, "--memory", held, "--model", tmp_path)
    assert_one_line_error(result, 2, "leave out --model")
    assert (held / store.MANIFEST_FILE).read_bytes() == before


def test_the_memory_s_own_model_however_spelled_is_accepted(ingested, docs, tiny_model_dir):
    root, _ = ingested
    for model in (str(tiny_model_dir), f"{tiny_model_dir}/.", None):
        options = [] if model is None else ["--model", model]
        result = run_cli("ingest", docs, "--memory", root, *options)
        assert result.code == 0, result
        assert "added 0 document(s), skipped 2 already held" in result.stdout


# --- 7. files named on the command line ---------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("report.pdf", NEW_FACT.encode(), "not a .txt/.md/.markdown/.rst file"),
        ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00", "not a .txt/.md"),
        ("notes", NEW_FACT.encode(), "not a .txt/.md"),
        ("bytes.txt", b"abc\x00\x01\x02 binary", "NUL bytes"),
        ("latin.md", "caf\xe9".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_named_file_that_is_not_text_is_refused_before_anything(
    tmp_path, docs, tiny_model_dir, name, content, fragment
):
    path = tmp_path / name
    path.write_bytes(content)
    with no_model_loads():
        result = run_cli(
            "ingest", docs, path, "--memory", tmp_path / "m", "--model", tiny_model_dir
        )
    assert_one_line_error(result, 1, fragment)
    assert str(path) in result.stderr
    assert not (tmp_path / "m").exists()
