"""Stage 0 — chunking: split a document into chunks that fit the teacher's window.

Chunks end on sentence boundaries where possible, and at a paragraph's end once they are
half full, so that a chunk of a long document holds one paragraph's sentences with the
subject they open with; a sentence longer than a chunk is split on words. Pure: token
counting is passed in, so tests need no model.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..records import Chunk

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(rf"(?<=[.!?])\s+|{_PARAGRAPH_BREAK.pattern}")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def chunk_text(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Greedily pack sentences into chunks of at most `max_tokens` tokens; a chunk at least
    half full ends where its paragraph does (a blank line), a smaller one (a heading, a
    short paragraph) goes on into the next. Packed across paragraphs, a long document's
    chunks open mid-paragraph, without the subject their sentences refer to: the
    question's passage is retrieved and answered less often (benchmarks/RESULTS.md,
    "Long documents")."""
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        if current and count_tokens(" ".join(current)) >= max_tokens // 2:
            chunks.append(" ".join(current))
            current = []
        for sentence in _pieces(paragraph, max_tokens, count_tokens):
            candidate = " ".join([*current, sentence])
            if current and count_tokens(candidate) > max_tokens:
                chunks.append(" ".join(current))
                current = [sentence]
            else:
                current.append(sentence)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _pieces(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    pieces: list[str] = []
    for sentence in split_sentences(text):
        if count_tokens(sentence) <= max_tokens:
            pieces.append(sentence)
        else:
            pieces.extend(_split_long(sentence, max_tokens, count_tokens))
    return pieces


def _split_long(sentence: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    parts: list[str] = []
    current = ""
    for word in sentence.split():
        candidate = f"{current} {word}".strip()
        if current and count_tokens(candidate) > max_tokens:
            parts.append(current)
            current = word
        else:
            current = candidate
    if current:
        parts.append(current)
    # A single "word" longer than max_tokens (e.g. a base64 blob) is cut by characters.
    return [piece for part in parts for piece in _cut_chars(part, max_tokens, count_tokens)]


def _cut_chars(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    if count_tokens(text) <= max_tokens:
        return [text]
    middle = len(text) // 2
    return _cut_chars(text[:middle], max_tokens, count_tokens) + _cut_chars(
        text[middle:], max_tokens, count_tokens
    )


def chunk_document(
    document_id: str,
    content_hash: str,
    text: str,
    max_tokens: int,
    count_tokens: Callable[[str], int],
) -> list[Chunk]:
    return [
        Chunk(f"{content_hash[:16]}-{index}", document_id, index, piece, count_tokens(piece))
        for index, piece in enumerate(chunk_text(text, max_tokens, count_tokens))
    ]


_HEADING = re.compile(r"^\s*(#{1,6}\s|[A-Z0-9][^.!?\n]{0,80}\n)")
"""A chunk that opens with a Markdown heading or a short unpunctuated first line (a title)."""


def section_starts(chunk_texts: list[str], most: int) -> list[int]:
    """Where a long document's sections begin (chunk indices, the first 0): runs of at most
    `most` consecutive chunks, as even as the count allows, each boundary moved to a chunk
    that opens with a heading where one lies within a quarter of a section of it, so that
    sections follow the document's own structure."""
    count = len(chunk_texts)
    sections = max(1, -(-count // most))
    starts = [0]
    for number in range(1, sections):
        even = round(number * count / sections)
        reach = max(1, (count // sections) // 4)
        near = [
            i
            for i in range(even - reach, even + reach + 1)
            if starts[-1] < i < count
            and i - starts[-1] <= most
            and count - i <= most * (sections - number)
            and _HEADING.match(chunk_texts[i])
        ]
        start = min(near, key=lambda i: abs(i - even)) if near else even
        starts.append(max(start, starts[-1] + 1))
    return _within(starts, count, most)


def _within(starts: list[int], count: int, most: int) -> list[int]:
    """`starts` with a boundary added wherever a section (moved to a heading) grew past
    `most` chunks."""
    bounded = []
    for start, end in zip(starts, [*starts[1:], count], strict=True):
        bounded += list(range(start, end, most))
    return bounded
