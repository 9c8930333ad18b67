"""Command-line interface: `parametric-memory ingest|ask|recall|list|info|verify|forget|compact`.

Library errors become one line on stderr and exit code 1, usage errors (a bad --config, a
--model other than the memory's) one line and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from pydantic import ValidationError
from transformers.utils import logging as transformers_logging

from . import store
from ._version import __version__
from .config import CompactionConfig, MemoryConfig, RoutingConfig
from .distributed import add_documents_distributed, launched_by_torchrun
from .documents import TEXT_SUFFIXES, read_files
from .errors import (
    InvalidArgumentError,
    InvalidDocumentError,
    MemoryExistsError,
    ParametricMemoryError,
)
from .ingest import IngestReport
from .memory import MAX_NEW_TOKENS, ParametricMemory, check_max_new_tokens
from .records import Document
from .store import LOCK_FILE, LOCK_OWNER_FILE, MANIFEST_FILE
from .store.verify import verify_memory

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_LOCK_FILES = (LOCK_FILE, LOCK_OWNER_FILE)
_PROG = "parametric-memory"
_EXIT_CODES = "exit status: 0 done, 1 error, 2 usage error, 130 interrupted"
_YAML_SUFFIXES = (".yaml", ".yml")
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command line that asks for something the memory cannot do (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    prefer_expandable_segments()
    args = _parser().parse_args(argv)
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ParametricMemoryError as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted; the memory keeps its last commit", file=sys.stderr)
        return EXIT_INTERRUPTED


def prefer_expandable_segments() -> None:
    """Let PyTorch's CUDA allocator grow segments instead of caching fixed blocks, unless the
    user configured it: documents trained together allocate tensors of ever-changing shapes,
    and with fixed blocks the cached blocks of every past shape stay reserved (about twice
    the memory; measured: see benchmarks/RESULTS.md). Read when CUDA first allocates."""
    if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and "PYTORCH_ALLOC_CONF" not in os.environ:
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    # The handler's own level also silences libraries that set DEBUG on their own loggers.
    handler = logging.StreamHandler()
    handler.setLevel(level)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[handler]
    )
    if not verbose:
        # Dependencies' deprecation notices are for developers; users get one line or none.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)


def package_version() -> str:
    """The installed distribution's version; the source tree's when it is not installed."""
    try:
        return metadata.version(_PROG)
    except metadata.PackageNotFoundError:
        return __version__


# --- the command line -------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=__doc__.splitlines()[0],
        epilog=f"run `{_PROG} COMMAND --help` for a command's options and examples\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {package_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each step, and dependencies' warnings"
    )
    commands = parser.add_subparsers(
        required=True, dest="command", metavar="COMMAND", help="what to do (one of these)"
    )
    _ingest_command(commands)
    _question_commands(commands)
    _list_command(commands)
    _info_command(commands)
    _verify_command(commands)
    _forget_command(commands)
    _compact_command(commands)
    return parser


def _command(
    commands: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    summary: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """A sub-command whose help ends with examples, kept as written."""
    lines = "\n".join(f"  {_PROG} {name} {example}" for example in examples)
    command = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"examples:\n{lines}\n\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.set_defaults(handler=handler)
    return command


def _memory_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--memory", required=True, metavar="FOLDER", help="the memory's folder (required)"
    )


def _device_option(command: argparse.ArgumentParser, new_memory: bool = False) -> None:
    kept = "; a new memory keeps it in its config" if new_memory else ""
    command.add_argument(
        "--device",
        help="where the model runs this time: cpu, cuda, cuda:1, ... (default: the memory's "
        f"config, whose default auto is CUDA when available){kept}",
    )


def _progress_options(command: argparse.ArgumentParser) -> None:
    command.set_defaults(progress=None)
    command.add_argument(
        "-q",
        "--quiet",
        dest="progress",
        action="store_const",
        const=False,
        help="no progress bars (there are none either when stderr is not a terminal)",
    )
    command.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        help="the same as --quiet",
    )
    command.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        help="progress bars even when stderr is not a terminal (for tools that read them)",
    )


def _ingest_command(commands: argparse._SubParsersAction) -> None:
    ingest = _command(
        commands,
        "ingest",
        _ingest,
        f"consolidate text files ({'/'.join(TEXT_SUFFIXES)}) or folders of them",
        (
            "notes/ --memory ./memory",
            "handbook.md faq.txt --memory ./memory --model HuggingFaceTB/SmolLM2-360M-Instruct",
            "notes/ --memory ./memory --config memory.json --device cuda:1 --quiet",
        ),
    )
    ingest.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help=f"files or folders (read recursively for {'/'.join(TEXT_SUFFIXES)} files)",
    )
    _memory_option(ingest)
    ingest.add_argument(
        "--model",
        help='base model of a new memory: "default", a Hugging Face id or a local folder; '
        "an existing memory must be given its own model or none",
    )
    ingest.add_argument(
        "--config",
        metavar="FILE",
        help="JSON (or YAML) file of MemoryConfig fields for a new memory; "
        "--model and --device override its fields",
    )
    _device_option(ingest, new_memory=True)
    _progress_options(ingest)


def _question_commands(commands: argparse._SubParsersAction) -> None:
    for name, handler, summary, example in (
        ("ask", _ask, "answer a question from the memory's weights", '"Who lit the lantern?"'),
        ("recall", _recall, "write out what the memory holds about a query", '"lanterns"'),
    ):
        command = _command(
            commands, name, handler, summary, (f"{example} --memory ./memory --max-new-tokens 64",)
        )
        command.add_argument("text", help="the question" if name == "ask" else "the query")
        _memory_option(command)
        # Checked by the command, not argparse: a bad value is one line, not the usage text.
        command.add_argument(
            "--max-new-tokens",
            default=128,
            metavar="N",
            help=f"longest answer, in tokens: 1 to {MAX_NEW_TOKENS} (default: 128)",
        )
        if name == "ask":
            _routing_options(command)
        _device_option(command)


def _routing_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--shards-per-question",
        type=int,
        metavar="K",
        help="answer with the sum of the question's top K shards (default: the memory's)",
    )
    command.add_argument(
        "--selection",
        choices=("router", "confidence"),
        help="confidence: the surest of the top shards' answers (default: the memory's)",
    )
    command.add_argument(
        "--rerank",
        metavar="K",
        help="the model re-orders BM25's top K shards, 1 to 16; 1: BM25 alone (default: the "
        "memory's)",
    )


def _list_command(commands: argparse._SubParsersAction) -> None:
    listing = _command(
        commands,
        "list",
        _list,
        "the documents held (the ids `forget` takes), their source and shard",
        ("--memory ./memory", "--memory ./memory --json"),
    )
    _memory_option(listing)
    listing.add_argument(
        "--json", action="store_true", help="one JSON array of the documents' records"
    )


def _info_command(commands: argparse._SubParsersAction) -> None:
    info = _command(
        commands,
        "info",
        _info,
        "model, documents, tokens, adapter size (as JSON)",
        ("--memory ./memory",),
    )
    _memory_option(info)
    _device_option(info)


def _verify_command(commands: argparse._SubParsersAction) -> None:
    verify = _command(
        commands,
        "verify",
        _verify,
        "check the memory's files and hashes (exit code 1 on a problem)",
        ("--memory ./memory",),
    )
    _memory_option(verify)


def _forget_command(commands: argparse._SubParsersAction) -> None:
    forget = _command(
        commands,
        "forget",
        _forget,
        "remove a document and its influence",
        ("notes/handbook.md --memory ./memory",),
    )
    forget.add_argument("document_id", help="the document's id, as `list` shows it")
    _memory_option(forget)
    _device_option(forget)
    _progress_options(forget)


def _compact_command(commands: argparse._SubParsersAction) -> None:
    compact = _command(
        commands,
        "compact",
        _compact,
        "consolidate level-0 documents again, related ones together",
        ("--memory ./memory", "--memory ./memory --documents-per-shard 16 --quiet"),
    )
    _memory_option(compact)
    compact.add_argument(
        "--documents-per-shard",
        type=_group_size,
        metavar="N",
        help="documents per compacted shard, at least 2 (default: the memory's config)",
    )
    _device_option(compact)
    _progress_options(compact)


def _group_size(value: str) -> int:
    if not value.isdigit() or int(value) < 2:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 2, got {value!r}")
    return int(value)


def _progress(args: argparse.Namespace) -> bool:
    """Bars only for a person watching: never with --quiet, nor into a file or a pipe, where
    every `\\r` frame would be one more line of a log, unless --progress asks for them."""
    if args.progress is not None:
        return args.progress
    return sys.stderr is not None and sys.stderr.isatty()


# --- ingest -------------------------------------------------------------------------------
def _ingest(args: argparse.Namespace) -> int:
    fields = _requested_fields(args)
    config = _validated(fields, args.config)
    refuse_unsupported_files(args.paths)
    documents = read_files(args.paths)  # bad input is refused before a model is loaded
    root = Path(args.memory)
    if (root / MANIFEST_FILE).exists():
        _refuse_other_settings(root, fields, config, args.config)
    report = _add(args, root, config, documents)
    if report is None:  # a torchrun process other than rank 0: that one reports
        return 0
    print(
        f"added {len(report.added)} document(s), skipped {len(report.skipped)} already held; "
        f"{report.chunks} chunk(s), {report.transfer_items} transfer item(s)"
    )
    return 0


def _add(
    args: argparse.Namespace, root: Path, config: MemoryConfig, documents: list[Document]
) -> IngestReport | None:
    progress = _progress(args)
    if not launched_by_torchrun():
        memory = _open_or_create(root, config, args.device)
        return memory.add_files(args.paths, progress=progress)
    # One process per GPU, shards spread over them.
    if args.device is not None:
        raise UsageError("--device does not apply under torchrun: each process takes a GPU")
    report = add_documents_distributed(root, documents, config=config, progress=progress)
    return report if os.environ.get("RANK") == "0" else None


def refuse_unsupported_files(paths: Sequence[str]) -> None:
    """Files named on the command line pass the rule a folder scan picks files by."""
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.suffix not in TEXT_SUFFIXES:
            raise InvalidDocumentError(
                f"{path}: not a {'/'.join(TEXT_SUFFIXES)} file (a folder scan skips it too); "
                "convert it to text or leave it out"
            )


def _requested_fields(args: argparse.Namespace) -> dict[str, object]:
    """MemoryConfig fields asked for: --config's file, overridden by --model and --device."""
    fields = _config_file_fields(args.config) if args.config is not None else {}
    for name in ("model", "device"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return fields


def _config_file_fields(path: str) -> dict[str, object]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UsageError(f"--config {path}: cannot read it: {reason}") from None
    fields = _parse_config(path, text)
    if not isinstance(fields, dict):
        kind = type(fields).__name__
        raise UsageError(f"--config {path}: expected an object of MemoryConfig fields, got {kind}")
    return fields


def _parse_config(path: str, text: str) -> object:
    if Path(path).suffix.lower() not in _YAML_SUFFIXES:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"--config {path}: not valid JSON: {error}") from None
    try:
        import yaml
    except ImportError:
        raise UsageError(f"--config {path}: YAML needs pyyaml installed; or use JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"--config {path}: not valid YAML: {_one_line(error)}") from None


def _validated(fields: dict[str, object], config_path: str | None) -> MemoryConfig:
    try:
        return MemoryConfig.model_validate(fields)
    except ValidationError as error:
        where = f"--config {config_path}" if config_path is not None else "bad option"
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors()
        )
        raise UsageError(f"{where}: {_one_line(problems)}") from None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _refuse_other_settings(
    root: Path, fields: dict[str, object], config: MemoryConfig, config_path: str | None
) -> None:
    """An existing memory keeps the model and config it was made with: asking for others is
    an error, never silently ignored."""
    held = store.read_manifest(root).config
    model = fields.get("model")
    if model is not None and not _same_model(str(model), held.model):
        raise UsageError(
            f"{root} was made with model {held.model!r}, not {model!r}: leave out --model "
            "to add to it, or give a new --memory"
        )
    ignored = {"model", "device"}
    if config_path is not None and config.model_dump(exclude=ignored) != held.model_dump(
        exclude=ignored
    ):
        raise UsageError(
            f"--config {config_path} differs from the config {root} was made with: "
            "--config applies to a new memory"
        )


def _same_model(asked: str, held: str) -> bool:
    if asked == held:
        return True
    return Path(asked).exists() and Path(held).exists() and Path(asked).samefile(held)


def _open_or_create(root: Path, config: MemoryConfig, device: str | None) -> ParametricMemory:
    """An existing memory runs on `device` this time (None: its config's); a new one is made
    with `config` (which holds --device)."""
    if (root / MANIFEST_FILE).exists():
        return ParametricMemory.open(root, device=device)
    _refuse_a_folder_in_use(root)
    return ParametricMemory.create(root, config)


def _refuse_a_folder_in_use(root: Path) -> None:
    # Files without a manifest may be a memory whose manifest was lost: a new memory there
    # would make the next writer delete that memory's state as stale.
    if root.is_dir() and any(p.name not in _LOCK_FILES for p in root.iterdir()):
        raise MemoryExistsError(
            f"{root} is not empty but has no {MANIFEST_FILE}: restore the manifest of the "
            "memory it held, or give an empty or new folder for a new memory"
        )


# --- the other commands -------------------------------------------------------------------
def _max_new_tokens(value: str | int) -> int:
    """--max-new-tokens as a number, refused (before a model loads) unless 1..MAX_NEW_TOKENS."""
    try:
        number: object = int(value)
    except ValueError:
        number = value
    return check_max_new_tokens(number)


def _open(args: argparse.Namespace, routing: RoutingConfig | None = None) -> ParametricMemory:
    return ParametricMemory.open(args.memory, device=args.device, routing=routing)


def _rerank_routing(memory: str, value: str | None) -> RoutingConfig | None:
    """The memory's routing with --rerank's candidates, checked before the model loads."""
    if value is None:
        return None
    try:
        candidates = RoutingConfig(rerank=value).rerank  # type: ignore[arg-type]
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
        raise InvalidArgumentError(
            f"--rerank takes a whole number of shards: {reason}, got {value!r}"
        ) from None
    saved = store.read_manifest(Path(memory)).config.routing
    return saved.model_copy(update={"rerank": candidates})


def _ask(args: argparse.Namespace) -> int:
    max_new_tokens = _max_new_tokens(args.max_new_tokens)
    memory = _open(args, _rerank_routing(args.memory, args.rerank))
    routing = {"shards_per_question": args.shards_per_question, "selection": args.selection}
    for piece in memory.stream(args.text, max_new_tokens=max_new_tokens, **routing):
        print(piece, end="", flush=True)
    print()
    return 0


def _recall(args: argparse.Namespace) -> int:
    max_new_tokens = _max_new_tokens(args.max_new_tokens)
    recollection = _open(args).recall(args.text, max_new_tokens=max_new_tokens)
    print(recollection.text)
    return 0


def _list(args: argparse.Namespace) -> int:
    """From the manifest alone: listing loads no model."""
    documents = sorted(store.read_manifest(Path(args.memory)).documents.items())
    if args.json:
        print(json.dumps([{"id": i, **record.model_dump()} for i, record in documents], indent=2))
        return 0
    for document_id, record in documents:
        described = ", ".join(f"{key}={value}" for key, value in sorted(record.metadata.items()))
        shards = "shard " + ",".join(map(str, record.shards))
        if not record.complete:  # an interrupted ingest of a long document
            done, planned = len(record.sections), record.sections_planned
            shards += f" ({done} of {planned} sections: add it again to finish)"
        print("\t".join(filter(None, (document_id, shards, described))))
    return 0


def _info(args: argparse.Namespace) -> int:
    print(json.dumps(_open(args).info().model_dump(), indent=2))
    return 0


def _compact(args: argparse.Namespace) -> int:
    memory = _open(args)
    settings = memory.config.compaction
    if args.documents_per_shard is not None:
        fields = {**settings.model_dump(), "documents_per_shard": args.documents_per_shard}
        settings = CompactionConfig.model_validate(fields)
    report = memory.compact(settings, progress=_progress(args))
    print(
        f"compacted {sum(map(len, report.groups))} document(s) into {len(report.groups)} "
        f"shard(s); {report.shards_before} -> {report.shards_after} shards in "
        f"{report.seconds:.1f}s"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    problems = verify_memory(args.memory)
    for problem in problems:
        print(problem)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return EXIT_ERROR if problems else 0


def _forget(args: argparse.Namespace) -> int:
    _open(args).delete_document(args.document_id, progress=_progress(args))
    print(f"forgot {args.document_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
