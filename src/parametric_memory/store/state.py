"""Stage 4 — the store: a memory is a folder of data, never code.

    memory/
      manifest.json            what the memory holds; names the committed state folder
      state-000007/
        shards/0000/           one peft adapter per shard of documents:
                               adapter_config.json + adapter_model.safetensors
        chunks.jsonl           every chunk held (the teacher's context for replay)
        transfer_set.jsonl     every selected transfer item (the replay set)
      .lock                    the single writer's file lock

A commit writes a new state folder under a temporary name, renames it, then replaces the
manifest atomically; only then is the old state removed. A crash at any point leaves the
previous manifest pointing at a complete state folder. Shards a commit did not change are
hard-linked from the previous state, so a commit costs one shard's write, not all of them.

A folder may come from anyone: `read_manifest` refuses a manifest naming any path but the
state's own regular files (`paths.py`), before anything is read or written through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._version import __version__
from ..config import MemoryConfig
from ..errors import (
    CorruptMemoryError,
    IncompatibleMemoryError,
    MemoryLockedError,
    MemoryNotFoundError,
    ParametricMemoryError,
    StorageFullError,
)
from ..records import Chunk, TransferItem
from .paths import check_entry, check_manifest_paths, open_regular, plain_parts, read_regular

SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
CHUNKS_FILE = "chunks.jsonl"
TRANSFER_SET_FILE = "transfer_set.jsonl"
LOCK_FILE = ".lock"
LOCK_OWNER_FILE = ".lock.owner"
_STATE_PREFIX = "state-"
_TEMP_PREFIX = ".incoming-"


class Section(BaseModel):
    """Consecutive chunks of a long document, consolidated into a shard of their own."""

    model_config = ConfigDict(extra="ignore")
    first_chunk: int = Field(ge=0)
    shard: int = Field(ge=0)


class DocumentRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content_hash: str
    chunks: int
    """Chunks held (of a long document being ingested: those of its committed sections)."""
    tokens: int
    transfer_items: int
    added_at: str
    shard: int = 0
    """The adapter shard the document was consolidated into (its first section's)."""
    metadata: dict[str, str] = {}
    sections: list[Section] = []
    """A long document's committed sections, in order, each in its own shard; empty for a
    document held by one shard."""
    sections_planned: int = 0
    """Sections a long document is cut into; fewer committed: its ingest was interrupted,
    and adding it again consolidates the rest."""

    @property
    def shards(self) -> list[int]:
        """Every shard that holds part of the document."""
        return [section.shard for section in self.sections] or [self.shard]

    @property
    def complete(self) -> bool:
        return len(self.sections) >= self.sections_planned

    def shard_of_chunk(self, index: int) -> int:
        """The shard holding the document's chunk `index`."""
        shard = self.shard
        for section in self.sections:
            if section.first_chunk <= index:
                shard = section.shard
        return shard


class BaseModelRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    fingerprint: str
    model_type: str
    vocab_size: int
    hidden_size: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    schema_version: int = SCHEMA_VERSION
    library_version: str = __version__
    prompt_version: int = Field(1, ge=1, strict=True)
    """The version of the transfer prompts the memory's items were elicited with
    (`method.prompts.PROMPT_VERSION`); manifests older than the field were made with 1."""
    created_at: str
    updated_at: str
    base_model: BaseModelRecord
    config: MemoryConfig
    documents: dict[str, DocumentRecord] = {}
    state: str | None = None
    """Folder (relative) of the committed adapter and data; None before the first commit."""
    files: dict[str, str] = {}
    """sha256 of every file of the committed state, by path relative to the memory."""
    compacted_shards: list[Annotated[int, Field(ge=0, strict=True)]] = []
    """Shards written by compaction (many related documents, trained jointly). New
    documents never go into them; the others are level 0."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise MemoryNotFoundError(f"no memory at {root}: the folder does not exist")
    if not path.is_file() and not path.is_symlink():
        raise MemoryNotFoundError(f"no memory at {root}: {MANIFEST_FILE} is missing")
    try:
        raw = json.loads(read_regular(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptMemoryError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise CorruptMemoryError(f"{path} holds {type(raw).__name__}, not a JSON object")
    version = _as_int(raw.get("schema_version"))
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise IncompatibleMemoryError(
            f"{root} was written by parametric-memory {raw.get('library_version', '?')} "
            f"(schema {version}); this is {__version__} (schema {SCHEMA_VERSION}): upgrade "
            f"parametric-memory to >= {raw.get('library_version', 'a newer version')}"
        )
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise IncompatibleMemoryError(
            f"{root} uses the single-adapter layout of parametric-memory "
            f"{raw.get('library_version', '?')} (schema {version}); this is {__version__} "
            f"(schema {SCHEMA_VERSION}): ingest its documents into a new memory"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CorruptMemoryError(f"{path}: invalid field '{where}': {first['msg']}") from None
    check_manifest_paths(root, manifest.state, manifest.files)
    return manifest


def _as_int(value: object) -> object:
    """An integer however JSON spelled it (3, 3.0, "3"), else the value unchanged: pydantic
    would coerce those spellings, so the version check must see them as numbers too."""
    if isinstance(value, bool):
        return value
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else value


def shard_dir(shard: int) -> str:
    """Folder of a shard's adapter, relative to a state folder."""
    return f"{SHARDS_DIR}/{shard:04d}"


def shard_weights(root: Path, manifest: Manifest, shard: int) -> Path | None:
    """The committed weights file of `shard`, or None if the shard holds nothing yet."""
    if manifest.state is None:
        return None
    relative = f"{manifest.state}/{shard_dir(shard)}/{ADAPTER_WEIGHTS_NAME}"
    return root / relative if relative in manifest.files else None


def commit(
    root: Path,
    manifest: Manifest,
    write_state: Callable[[Path], None],
    unchanged_shards: Iterable[int] = (),
) -> Manifest:
    """Write a new state with `write_state(folder)` and make it current, atomically. The
    files of `unchanged_shards` are hard-linked from the current state, not rewritten."""
    staging = staging_folder(root)
    try:
        write_state(staging)
        carried = _link_shards(root, manifest, staging, unchanged_shards)
        _fsync_tree(staging, skip=set(carried))
        name = _next_state_name(manifest.state)
        os.replace(staging, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = hash_tree(root / name, skip=set(carried))
    files = {f"{name}/{rel}": digest for rel, digest in {**written, **carried}.items()}
    updated = manifest.model_copy(update={"state": name, "files": files, "updated_at": now()})
    write_manifest(root, updated)
    if manifest.state and manifest.state != name:
        shutil.rmtree(root / manifest.state, ignore_errors=True)
    return updated


def staging_folder(root: Path) -> Path:
    """A new folder for files not yet committed; the next writer removes it if left behind."""
    return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=root))


def write_manifest(root: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    write_text_atomic(root / MANIFEST_FILE, text + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def refuse_orphaned_states(root: Path) -> None:
    """A folder holding state folders but no manifest is a memory that lost its manifest:
    creating a new memory there would let the next writer delete that state."""
    if not root.is_dir():
        return
    orphans = [p.name for p in root.iterdir() if p.name.startswith((_STATE_PREFIX, _TEMP_PREFIX))]
    if orphans:
        raise CorruptMemoryError(
            f"{root} holds {', '.join(sorted(orphans))} but no {MANIFEST_FILE}: restore the "
            "manifest, or create the memory in an empty folder"
        )


def remove_stale_states(root: Path, manifest: Manifest) -> None:
    """Delete state and staging folders a crashed writer left behind (writer only)."""
    for path in root.iterdir():
        stale_state = path.name.startswith(_STATE_PREFIX) and path.name != manifest.state
        if path.is_dir() and (stale_state or path.name.startswith(_TEMP_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.name.startswith(f".{MANIFEST_FILE}."):
            path.unlink(missing_ok=True)  # an interrupted write_text_atomic


@contextlib.contextmanager
def write_lock(root: Path) -> Iterator[None]:
    """Hold the memory's single-writer lock, or fail at once naming the holder."""
    for name in (LOCK_FILE, LOCK_OWNER_FILE):
        _refuse_a_special_entry(root / name)
    lock = FileLock(str(root / LOCK_FILE), timeout=0)
    owner = root / LOCK_OWNER_FILE
    try:
        lock.acquire()
    except Timeout:
        holder = owner.read_text().strip() if owner.is_file() else "another process"
        raise MemoryLockedError(
            f"memory {root} is locked by pid {holder}; wait for it to finish or stop it"
        ) from None
    try:
        _write_owner(owner)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            owner.unlink()
        lock.release()


def _refuse_a_special_entry(path: Path) -> None:
    """A lock file that is a symlink or no regular file would make the lock write elsewhere."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise CorruptMemoryError(
            f"{path} is a symlink or not a regular file; delete it, then try again"
        )


def _write_owner(owner: Path) -> None:
    """Name the lock's holder for the next writer's message; best effort: on a full disk the
    lock still holds, and a writer that only frees space (`forget`) must still run."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(owner, flags, 0o644), "w") as handle:
            handle.write(str(os.getpid()))
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise


DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
"""The errors of a full disk or an exhausted quota."""


@contextlib.contextmanager
def storage_errors(root: Path) -> Iterator[None]:
    """Inside, a full disk surfaces as `StorageFullError` (one line), not a bare OSError.
    Commits are atomic, so the memory still holds its last commit."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL or isinstance(error, ParametricMemoryError):
            raise
        raise StorageFullError(
            f"no space left on the disk of {root} ({error.strerror}); nothing was committed "
            "and the memory holds its last commit: free space on that disk, then try again"
        ) from None


def _link_shards(
    root: Path, manifest: Manifest, staging: Path, shards: Iterable[int]
) -> dict[str, str]:
    """Hard-link (copy where links are unsupported) the current state's files of `shards`
    into `staging`; returns their sha256 by path relative to the state folder."""
    carried = {}
    prefix = f"{manifest.state}/"
    wanted = {f"{shard_dir(shard)}/" for shard in shards}
    for relative, digest in manifest.files.items():
        inside = relative.removeprefix(prefix)
        if inside == relative or _shard_folder(inside) not in wanted:
            continue
        check_entry(root, relative)  # read_manifest checked it; the folder may have changed
        target = staging.joinpath(*plain_parts(root, inside))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(root / relative, target, follow_symlinks=False)
        except (OSError, NotImplementedError):  # no hard links here: copy
            with open_regular(root / relative) as source, target.open("xb") as copy:
                shutil.copyfileobj(source, copy)
        carried[inside] = digest
    return carried


def _shard_folder(inside: str) -> str | None:
    """ "shards/0007/" for "shards/0007/adapter_model.safetensors"; None outside shards."""
    parts = inside.split("/", 2)
    if len(parts) < 3 or parts[0] != SHARDS_DIR:
        return None
    return f"{parts[0]}/{parts[1]}/"


def hash_tree(folder: Path, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    paths = _files(folder, skip)
    digests = _for_each_file(file_sha256, paths)
    pairs = zip(paths, digests, strict=True)
    return {str(path.relative_to(folder)): digest for path, digest in pairs}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_jsonl(path: Path, records: list) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(dataclasses.asdict(record), ensure_ascii=False) + "\n")


def read_chunks(root: Path, manifest: Manifest) -> list[Chunk]:
    return _read_records(root, manifest, CHUNKS_FILE, Chunk)


def read_transfer_set(root: Path, manifest: Manifest) -> list[TransferItem]:
    return _read_records(root, manifest, TRANSFER_SET_FILE, TransferItem)


def _read_records(root: Path, manifest: Manifest, name: str, record_type: type) -> list:
    """The records of one JSON-lines file of the committed state, checked against the
    manifest's sha256 first so damaged records are never re-committed as sound."""
    if manifest.state is None:
        return []
    relative = f"{manifest.state}/{name}"
    path = root / relative
    try:
        content = read_regular(path)
        if hashlib.sha256(content).hexdigest() != manifest.files.get(relative):
            raise CorruptMemoryError(f"{path} does not match its manifest hash; run `verify`")
        lines = content.decode("utf-8").splitlines()
        return [record_type(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise CorruptMemoryError(f"cannot read {path}: {error}; run `verify`") from None


def _next_state_name(current: str | None) -> str:
    number = int(current.removeprefix(_STATE_PREFIX)) + 1 if current else 1
    return f"{_STATE_PREFIX}{number:06d}"


_FILE_THREADS = min(16, os.cpu_count() or 1)
"""Threads that hash or sync a commit's files. hashlib and fsync release the GIL, so a
commit of many new 20 MB shards is not held to one core's hashing speed."""


def _files(folder: Path, skip: set[str] | frozenset[str]) -> list[Path]:
    """The files under `folder`, sorted, but those whose relative path is in `skip`."""
    paths = sorted(path for path in folder.rglob("*") if path.is_file())
    return [path for path in paths if str(path.relative_to(folder)) not in skip]


def _for_each_file(action: Callable[[Path], object], paths: list[Path]) -> list:
    with ThreadPoolExecutor(_FILE_THREADS) as pool:
        return list(pool.map(action, paths))


def _fsync_tree(folder: Path, skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Sync every file and folder under `folder` to disk. Files in `skip` (hard links to
    files of a committed state, already on disk) are left out; their new folder entries are
    synced with the folders."""
    _for_each_file(_fsync_file, _files(folder, skip))
    _for_each_file(_fsync_dir, [folder, *(p for p in folder.rglob("*") if p.is_dir())])


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
