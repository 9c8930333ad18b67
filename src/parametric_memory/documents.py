"""Documents as the library takes them: validated text with an id and a content hash.

Reading files lives here too, so the CLI and the integrations refuse the same bad input
(empty, binary, not UTF-8) with the same message.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import InvalidDocumentError
from .records import Document, content_hash

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
_MAX_CONTROL_FRACTION = 0.01


def validate_text(text: object, label: str) -> str:
    """Return `text` normalised (NFC, unified newlines), or raise InvalidDocumentError."""
    if not isinstance(text, str):
        raise InvalidDocumentError(f"{label}: expected text (str), got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    if not _is_utf8_encodable(text):
        raise InvalidDocumentError(
            f"{label}: the text holds unpaired surrogates (not valid Unicode); decode it properly"
        )
    if not text.strip():
        raise InvalidDocumentError(f"{label}: the document is empty")
    if "\x00" in text:
        raise InvalidDocumentError(f"{label}: the document contains NUL bytes (binary data?)")
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t")
    if controls > _MAX_CONTROL_FRACTION * len(text):
        raise InvalidDocumentError(
            f"{label}: {controls} control characters in {len(text)} (binary data?)"
        )
    return text


def make_documents(texts: Sequence[str], ids: Sequence[str] | None = None) -> list[Document]:
    """Validate texts and pair them with ids (default: the first 12 hex of the content hash)."""
    if isinstance(texts, str):
        raise InvalidDocumentError("expected a list of texts, got a single str; wrap it in [...]")
    if ids is not None and len(ids) != len(texts):
        raise InvalidDocumentError(f"got {len(texts)} texts but {len(ids)} ids")
    documents = []
    for index, text in enumerate(texts):
        doc_id = ids[index] if ids is not None else None
        label = f"document {doc_id!r}" if doc_id is not None else f"document #{index}"
        clean = validate_text(text, label)
        if doc_id is not None:
            _check_id(doc_id, label)
        documents.append(Document(doc_id or content_hash(clean)[:12], clean))
    duplicates = {d.id for d in documents if sum(e.id == d.id for e in documents) > 1}
    if duplicates:
        raise InvalidDocumentError(f"duplicate document ids in one call: {sorted(duplicates)}")
    return documents


def _check_id(doc_id: object, label: str) -> None:
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise InvalidDocumentError(f"{label}: ids must be non-empty strings")
    if not _is_utf8_encodable(doc_id):
        raise InvalidDocumentError(f"{label}: the id holds unpaired surrogates (not valid Unicode)")


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_text_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, text suffixes only) into a sorted file list."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidDocumentError(f"{path}: no such file or folder")
    if not files:
        raise InvalidDocumentError(f"no {'/'.join(TEXT_SUFFIXES)} files under {list(paths)}")
    return files


def read_document(path: Path, root: Path | None = None) -> Document:
    """Read one UTF-8 text file; its id is its path relative to `root` (or its name)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidDocumentError(
            f"{path}: not UTF-8 text (byte {error.start}); convert it or leave it out"
        ) from None
    doc_id = str(path.relative_to(root)) if root is not None else path.name
    if not _is_utf8_encodable(str(path)):
        # Linux file names are bytes; one that is not UTF-8 cannot be an id in the manifest.
        raise InvalidDocumentError(f"{str(path)!r}: the file name is not UTF-8; rename the file")
    return Document(doc_id, validate_text(text, str(path)), {"source": str(path)})


def read_files(paths: Iterable[str | Path]) -> list[Document]:
    """Read and validate every text file under `paths` (ids: paths relative to a folder)."""
    documents = []
    for raw in paths:
        root = Path(raw) if Path(raw).is_dir() else None
        documents.extend(read_document(path, root) for path in iter_text_files([raw]))
    return documents
