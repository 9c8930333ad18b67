"""Command-line interface: `parametric-memory ingest|ask|recall|info|verify|forget`.

Library errors become one line on stderr and a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from transformers.utils import logging as transformers_logging

from .config import CompactionConfig, MemoryConfig
from .distributed import add_documents_distributed, launched_by_torchrun
from .documents import read_files
from .errors import MemoryExistsError, ParametricMemoryError
from .memory import MAX_NEW_TOKENS, ParametricMemory, check_max_new_tokens
from .store import LOCK_FILE, LOCK_OWNER_FILE, MANIFEST_FILE
from .store.verify import verify_memory

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
_LOCK_FILES = (LOCK_FILE, LOCK_OWNER_FILE)


def main(argv: Sequence[str] | None = None) -> int:
    prefer_expandable_segments()
    args = _parser().parse_args(argv)
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except ParametricMemoryError as error:
        print(f"parametric-memory: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("parametric-memory: interrupted; the memory keeps its last commit", file=sys.stderr)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parametric-memory", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(required=True, dest="command")

    ingest = commands.add_parser("ingest", help="consolidate .txt/.md files or folders")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--memory", required=True)
    ingest.add_argument("--model", default="default", help="base model for a new memory")
    ingest.set_defaults(handler=_ingest)

    for name, handler, help_text in (
        ("ask", _ask, "answer a question from the memory's weights"),
        ("recall", _recall, "write out what the memory holds about a query"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("text")
        command.add_argument("--memory", required=True)
        # Checked by the command, not argparse: a bad value is one line, not the usage text.
        command.add_argument("--max-new-tokens", default=128, help=f"1 to {MAX_NEW_TOKENS}")
        command.set_defaults(handler=handler)

    info = commands.add_parser("info", help="model, documents, tokens, adapter size")
    info.add_argument("--memory", required=True)
    info.set_defaults(handler=_info)

    verify = commands.add_parser("verify", help="check the memory's files and hashes")
    verify.add_argument("--memory", required=True)
    verify.set_defaults(handler=_verify)

    forget = commands.add_parser("forget", help="remove a document and its influence")
    forget.add_argument("document_id")
    forget.add_argument("--memory", required=True)
    forget.set_defaults(handler=_forget)
    compact = commands.add_parser(
        "compact", help="consolidate level-0 documents again, related ones together"
    )
    compact.add_argument("--memory", required=True)
    compact.add_argument(
        "--documents-per-shard",
        type=_group_size,
        help="documents per compacted shard, at least 2 (default: the memory's config)",
    )
    compact.set_defaults(handler=_compact)
    return parser


def _open_or_create(path: str, model: str) -> ParametricMemory:
    root = Path(path)
    if (root / MANIFEST_FILE).exists():
        return ParametricMemory.open(root)
    _refuse_a_folder_in_use(root)
    return ParametricMemory.create(root, MemoryConfig(model=model))


def _refuse_a_folder_in_use(root: Path) -> None:
    # Files without a manifest may be a memory whose manifest was lost: a new memory there
    # would make the next writer delete that memory's state as stale.
    if root.is_dir() and any(p.name not in _LOCK_FILES for p in root.iterdir()):
        raise MemoryExistsError(
            f"{root} is not empty but has no {MANIFEST_FILE}: restore the manifest of the "
            "memory it held, or give an empty or new folder for a new memory"
        )


def _ingest(args: argparse.Namespace) -> int:
    documents = read_files(args.paths)  # bad input is refused before a model is loaded
    if launched_by_torchrun():  # one process per GPU, shards spread over them
        config = MemoryConfig(model=args.model)
        report = add_documents_distributed(args.memory, documents, config=config)
        if os.environ.get("RANK") != "0":
            return 0
    else:
        report = _open_or_create(args.memory, args.model).add_files(args.paths)
    print(
        f"added {len(report.added)} document(s), skipped {len(report.skipped)} already held; "
        f"{report.chunks} chunk(s), {report.transfer_items} transfer item(s)"
    )
    return 0


def _max_new_tokens(value: str | int) -> int:
    """--max-new-tokens as a number, refused (before a model loads) unless 1..MAX_NEW_TOKENS."""
    try:
        number: object = int(value)
    except ValueError:
        number = value
    return check_max_new_tokens(number)


def _ask(args: argparse.Namespace) -> int:
    max_new_tokens = _max_new_tokens(args.max_new_tokens)
    memory = ParametricMemory.open(args.memory)
    for piece in memory.stream(args.text, max_new_tokens=max_new_tokens):
        print(piece, end="", flush=True)
    print()
    return 0


def _recall(args: argparse.Namespace) -> int:
    max_new_tokens = _max_new_tokens(args.max_new_tokens)
    recollection = ParametricMemory.open(args.memory).recall(
        args.text, max_new_tokens=max_new_tokens
    )
    print(recollection.text)
    return 0


def _info(args: argparse.Namespace) -> int:
    print(json.dumps(ParametricMemory.open(args.memory).info().model_dump(), indent=2))
    return 0


def _group_size(value: str) -> int:
    if not value.isdigit() or int(value) < 2:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 2, got {value!r}")
    return int(value)


def _compact(args: argparse.Namespace) -> int:
    memory = ParametricMemory.open(args.memory)
    settings = memory.config.compaction
    if args.documents_per_shard is not None:
        fields = {**settings.model_dump(), "documents_per_shard": args.documents_per_shard}
        settings = CompactionConfig.model_validate(fields)
    report = memory.compact(settings)
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
    ParametricMemory.open(args.memory).delete_document(args.document_id)
    print(f"forgot {args.document_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
