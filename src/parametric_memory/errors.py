"""The library's exceptions: one base class, and subclasses that also inherit the built-in
a caller would catch anyway (`ValueError`, `FileNotFoundError`, ...)."""

from __future__ import annotations


class ParametricMemoryError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidDocumentError(ParametricMemoryError, ValueError):
    """A document is empty, binary, or otherwise unusable as text."""


class MemoryNotFoundError(ParametricMemoryError, FileNotFoundError):
    """No memory folder (or no manifest inside it) where one was expected."""


class MemoryExistsError(ParametricMemoryError, FileExistsError):
    """`create` was asked to make a memory where one already exists."""


class CorruptMemoryError(ParametricMemoryError, ValueError):
    """A memory folder's files are unreadable, inconsistent, or fail their hashes."""


class IncompatibleMemoryError(ParametricMemoryError, ValueError):
    """A memory was written by a newer library or for a different base model."""


class MemoryLockedError(ParametricMemoryError, TimeoutError):
    """Another process holds the memory's write lock."""


class ModelLoadError(ParametricMemoryError, OSError):
    """The base model could not be found, converted or loaded."""


class TrainingDivergedError(ParametricMemoryError, ArithmeticError):
    """Consolidation left the adapter with NaN or infinite weights (nothing was committed)."""


class DocumentNotFoundError(ParametricMemoryError, KeyError):
    """A document id that the memory does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(ParametricMemoryError, ValueError):
    """An argument other than a document is out of its allowed range or of the wrong type."""


class GenerationTimeoutError(ParametricMemoryError, TimeoutError):
    """Generation produced no text for longer than its timeout."""


class StorageFullError(ParametricMemoryError, OSError):
    """The memory's disk (or quota) is full; the last commit is intact."""
