"""A full disk: writers fail in one line, the last commit stays whole, and `forget` still
runs (it is how a user frees space through the tool). The disk is a real small tmpfs."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from parametric_memory import MemoryConfig, ParametricMemory, store
from parametric_memory.errors import StorageFullError
from parametric_memory.store.verify import verify_memory

FIRST = "The Quillhaven lantern festival is held every May 14 in the harbour square."
SECOND = "Marrow Bay harvests violet kelp each October with copper rakes and long boats."


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    return filler


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_full_disk_fails_in_one_line_and_keeps_the_last_commit(
    small_disk, tiny_config: MemoryConfig
):
    memory = ParametricMemory.create(small_disk / "memory", tiny_config)
    memory.add_documents([FIRST], ids=["festival"], progress=False)
    filler = fill(small_disk)
    before = snapshot(memory.root)
    with pytest.raises(StorageFullError, match="no space left") as raised:
        memory.add_documents([SECOND], ids=["kelp"], progress=False)
    assert isinstance(raised.value, OSError) and raised.value.errno is None
    assert "\n" not in str(raised.value)
    after = snapshot(memory.root)
    assert {k: v for k, v in after.items() if not k.startswith(".incoming")} == before
    assert verify_memory(memory.root) == []
    assert list(ParametricMemory.open(memory.root).documents) == ["festival"]
    filler.unlink()
    memory.add_documents([SECOND], ids=["kelp"], progress=False)
    assert sorted(memory.documents) == ["festival", "kelp"]


def test_the_command_line_says_the_disk_is_full_in_one_line(
    small_disk, tiny_config: MemoryConfig, tmp_path
):
    ParametricMemory.create(small_disk / "memory", tiny_config)
    document = tmp_path / "kelp.md"
    document.write_text(SECOND)
    fill(small_disk)
    memory_flag = ["--memory", str(small_disk / "memory")]
    result = subprocess.run(
        [sys.executable, "-m", "parametric_memory.cli", "ingest", str(document), *memory_flag],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and "no space left" in errors[0], result.stderr


def test_forget_still_takes_the_lock_on_a_full_disk(small_disk, tiny_config: MemoryConfig):
    memory = ParametricMemory.create(small_disk / "memory", tiny_config)
    memory.add_documents([FIRST, SECOND], ids=["festival", "kelp"], progress=False)
    filler = fill(small_disk)
    with store.write_lock(memory.root):  # before: the owner file's write raised ENOSPC
        assert (memory.root / store.LOCK_FILE).exists()
    try:
        memory.delete_document("kelp", progress=False)
    except StorageFullError:  # its new state needs a little room too: one line, as above
        filler.write_bytes(b"")
        memory.delete_document("kelp", progress=False)
    assert list(memory.documents) == ["festival"]
    assert verify_memory(memory.root) == []


def test_other_os_errors_are_not_taken_for_a_full_disk(tmp_path):
    with pytest.raises(PermissionError), store.storage_errors(tmp_path):
        raise PermissionError(errno.EACCES, "denied")
