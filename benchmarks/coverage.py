"""Coverage, measured: which of each chunk's facts its kept transfer items teach, and whether
the gold questions a memory fails were ever asked of it. Reads the memory's files only (no
model is loaded).

    python benchmarks/coverage.py MEMORY --out DIR
    python benchmarks/coverage.py S/memory --questions ../shared/data/squad-dev.jsonl \\
        --records S/stream/quality.json --mode stream --out DIR

Facts (`fact_spans`) come from simple rules on a chunk's text, no tagger, in this order, each
rule skipping text an earlier one took:
  date    a month name with a day and/or year: "May 14", "February 7, 2016", "14 May 1911"
  year    a lone number 1000-2099: "1911"
  number  any other number, with an ordinal/decade ending, % or a scale word, or a time:
          "27", "50th", "1990s", "3.5 million", "8:50", "24" and "10" of "24–10"
  name    a run of capitalised words, joined by of/the/de/van/von...: "Orsk Hollow", "NFL",
          "University of Notre Dame"; split at a possessive that 2+ capitalised words follow
          ("Miami's Sun Life Stadium": "Miami", "Sun Life Stadium"); at a sentence's start its
          first word is dropped when it is a common opener ("The", "In"...), and a single
          word there is not taken
  phrase  a determiner then 2-4 lowercase words, cut at the first function word (or at an
          -ed/-ly word after the first): "the harbour town of" -> "harbour town". Without a
          tagger this rule takes some verbs ("every new employee receives"): it is reported
          on its own row so the noise stays out of the other categories.
A fact is covered when its SQuAD-normalised form appears, as whole words, in the normalised
answer of one of its chunk's kept items (the transfer set a memory stores is the kept one).
Whole words, not substrings: "14" is not covered by "2014". A recitation item's answer is its
whole chunk, so a kept one covers every fact: the kind table shows such copies, the coverage
left without each kind, and --ignore-kinds recitation measures the rest alone.

--questions (JSON lines read by common.load_documents; the documents whose ids the memory
holds, as quality.py and compaction.py pass them to `add_documents`): a gold question is
"asked" when its normalised gold answer appears, as whole words, in a kept item answer of its
document. --records: per-question records with a "contains" flag, either quality.json (its
records[MODE], default "stream", the mode whose memory `--stream-memory` keeps) or a JSON
list of {"question", "contains"[, "doc_id"]}; accuracy is then split by asked / never asked.
compaction.json keeps only summaries, no per-question records, so its runs cannot be split.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import load_documents
from metrics import estimate, normalise, percent

from parametric_memory import store
from parametric_memory.records import Chunk, TransferItem

CATEGORIES = ("date", "year", "number", "name", "phrase")

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?)"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = re.compile(
    rf"\b(?:{_MONTH}\s+{_DAY}(?:,?\s+\d{{4}})?|{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?"
    rf"|{_MONTH},?\s+\d{{4}})(?!\w)"
)
_NUMBER = re.compile(
    r"(?<![\w.:])\d{1,2}:\d{2}(?!\w)|(?<![\w.:])\d+(?:[.,]\d+)*(?:st|nd|rd|th|s)?"
    r"(?:\s?%|\s+(?:percent|per cent|hundred|thousand|million|billion|trillion))?(?!\w)"
)
_YEAR = re.compile(r"1\d{3}|20\d{2}")
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’&-]*"
_POSSESSIVE = re.compile(r"['’]s?$")
_CONNECTOR = r"(?:of|the|de|del|der|da|du|la|le|van|von|y)"
_NAME = re.compile(rf"\b{_CAP}(?:(?:\s+{_CONNECTOR})*\s+{_CAP})*")
_OPENER_WORDS = (
    "The A An In On At As By For From To Of With After Before During Since Under Over Between "
    "This That These Those It Its He She They His Her Their We Our There When While Although "
    "However Each Every Many Some All Most Both If But And Or So Also Then Today According "
    "Because Despite Following Unlike Like Once Until"
)
_OPENERS = frozenset(_OPENER_WORDS.split())
_DETERMINER = r"(?i:the|an?|this|that|these|those|its|his|her|their|our|each|every|several|various)"
_DETERMINER_AT = re.compile(rf"\b{_DETERMINER}\s+[\"“]?")
_LOWER_WORDS = re.compile(r"[a-z][a-z-]*(?:\s+[a-z][a-z-]*){1,3}")
_FUNCTION_WORD_LIST = (
    "of in on at by for from to with into onto over under about after before between through "
    "during without within across against among around behind beyond near since than toward "
    "towards upon via per and or but nor so yet that which who whom whose where when while "
    "whereas it its he she they them their his her we our you i is are was were be been being "
    "am has have had do does did can could will would may might must shall should not no also "
    "only just very more most as if then there here this these those such same other another "
    "each every all both some any the a an"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_WORD_LIST.split())


@dataclass(frozen=True)
class Fact:
    category: str
    """One of CATEGORIES: the rule that found it."""
    text: str
    """The span as the chunk writes it."""


def fact_spans(text: str) -> list[Fact]:
    """The chunk's facts by the module's rules, in text order, one per normalised form."""
    found: list[tuple[int, Fact]] = []
    masked = text
    for finder in (_dates, _numbers, _names, _phrases):
        spans = finder(masked)
        for start, end, fact in spans:
            found.append((start, fact))
            masked = masked[:start] + "#" * (end - start) + masked[end:]
    seen: set[str] = set()
    facts = []
    for _, fact in sorted(found, key=lambda pair: pair[0]):
        key = normalise(fact.text)
        if key and key not in seen:
            seen.add(key)
            facts.append(fact)
    return facts


def facts(text: str) -> list[str]:
    """The chunk's fact spans as written (see `fact_spans` and the module's rules)."""
    return [fact.text for fact in fact_spans(text)]


_Span = tuple[int, int, Fact]


def _dates(text: str) -> list[_Span]:
    return [(m.start(), m.end(), Fact("date", m.group())) for m in _DATE.finditer(text)]


def _numbers(text: str) -> list[_Span]:
    spans = []
    for match in _NUMBER.finditer(text):
        category = "year" if _YEAR.fullmatch(match.group()) else "number"
        spans.append((match.start(), match.end(), Fact(category, match.group())))
    return spans


def _names(text: str) -> list[_Span]:
    spans = []
    for match in _NAME.finditer(text):
        words = match.group().split()
        if _at_sentence_start(text, match.start()):
            if words[0] not in _OPENERS and len(words) < 2:
                continue
            if words[0] in _OPENERS:
                words = _drop_leading_connectors(words[1:])
        for part in _split_possessives(words):
            spans.append((match.start(), match.end(), Fact("name", " ".join(part))))
    return spans


def _split_possessives(words: list[str]) -> list[list[str]]:
    """ "Miami's Sun Life Stadium" -> Miami, Sun Life Stadium: a name ends at a possessive
    that two or more capitalised words follow ("Levi's Stadium" stays whole); a possessive
    ending of the last word is dropped."""
    parts: list[list[str]] = []
    start = 0
    for index, word in enumerate(words):
        rest = words[index + 1 :]
        if _POSSESSIVE.search(word) and sum(w[0].isupper() for w in rest) >= 2:
            parts.append([*words[start:index], _POSSESSIVE.sub("", word)])
            start = index + 1
    parts.append(words[start:])
    parts[-1] = [*parts[-1][:-1], _POSSESSIVE.sub("", parts[-1][-1])] if parts[-1] else []
    return [part for part in parts if part]


def _at_sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'“‘([")
    return not before or before[-1] in ".!?:\n"


def _drop_leading_connectors(words: list[str]) -> list[str]:
    while words and re.fullmatch(_CONNECTOR, words[0]):
        words = words[1:]
    return words


def _phrases(text: str) -> list[_Span]:
    spans = []
    for determiner in _DETERMINER_AT.finditer(text):
        run = _LOWER_WORDS.match(text, determiner.end())
        words = _phrase_words(run.group().split()) if run else []
        if run and len(words) >= 2:
            spans.append((run.start(), run.end(), Fact("phrase", " ".join(words))))
    return spans


def _phrase_words(words: list[str]) -> list[str]:
    """The words before the first function word, or the first -ed/-ly word after the first."""
    kept: list[str] = []
    for position, word in enumerate(words):
        if word in _FUNCTION_WORDS or (position > 0 and word.endswith(("ed", "ly"))):
            break
        kept.append(word)
    return kept


def appears(needle: str, haystack: str) -> bool:
    """Whether normalised `needle` is a run of whole words of normalised `haystack`."""
    return bool(needle) and f" {needle} " in f" {haystack} "


# --- coverage of chunks ----------------------------------------------------------------------
@dataclass
class ChunkCoverage:
    chunk_id: str
    document_id: str
    item_kinds: list[str]
    """The kind of each kept transfer item of the chunk."""
    copies: list[str]
    """The kinds of the kept items whose answer holds the whole chunk (recitation copies it:
    such an item covers every fact by construction)."""
    facts: list[Fact]
    covered_by: list[list[str]]
    """For each fact, the kinds of the kept items whose answers hold it (none: not covered)."""

    @property
    def covered(self) -> list[str]:
        return [f.text for f, kinds in zip(self.facts, self.covered_by, strict=True) if kinds]

    @property
    def ratio(self) -> float | None:
        return len(self.covered) / len(self.facts) if self.facts else None


def coverage(chunks: Sequence[Chunk], items: Sequence[TransferItem]) -> list[ChunkCoverage]:
    """Each chunk's facts and which kinds of its kept items cover them; items of chunks not
    in `chunks` are ignored."""
    answers: dict[str, list[tuple[str, str]]] = {chunk.id: [] for chunk in chunks}
    for item in items:
        if item.chunk_id in answers:
            answers[item.chunk_id].append((item.kind, normalise(item.answer)))
    return [_chunk_coverage(chunk, answers[chunk.id]) for chunk in chunks]


def _chunk_coverage(chunk: Chunk, answers: list[tuple[str, str]]) -> ChunkCoverage:
    found = fact_spans(chunk.text)
    covered_by = [
        sorted({kind for kind, answer in answers if appears(normalise(fact.text), answer)})
        for fact in found
    ]
    whole = normalise(chunk.text)
    copies = [kind for kind, answer in answers if appears(whole, answer)]
    kinds = [kind for kind, _ in answers]
    return ChunkCoverage(chunk.id, chunk.document_id, kinds, copies, found, covered_by)


def by_kind(chunks: Sequence[ChunkCoverage]) -> dict[str, dict]:
    """Per item kind (which elicitation prompts pay): kept items, those that copy their whole
    chunk, facts its answers cover, facts it alone covers, the share of all facts still
    covered without it, and covered facts per item; the kinds covering most come first."""
    items = Counter(kind for chunk in chunks for kind in chunk.item_kinds)
    copies = Counter(kind for chunk in chunks for kind in chunk.copies)
    covered: Counter[str] = Counter()
    alone: Counter[str] = Counter()
    for chunk in chunks:
        for kinds in chunk.covered_by:
            covered.update(kinds)
            alone.update(kinds if len(kinds) == 1 else [])
    total = sum(len(chunk.facts) for chunk in chunks)
    all_covered = sum(len(chunk.covered) for chunk in chunks)
    return {
        kind: {
            "items": items[kind],
            "whole_chunk_copies": copies[kind],
            "facts_covered": covered[kind],
            "covered_alone": alone[kind],
            "coverage_without": _share(all_covered - alone[kind], total),
            "facts_per_item": round(covered[kind] / items[kind], 3),
        }
        for kind in sorted(items, key=lambda k: (-covered[k], k))
    }


def by_category(chunks: Sequence[ChunkCoverage]) -> dict[str, dict]:
    """Facts and covered facts per rule (date, year, number, name, phrase)."""
    total: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    for chunk in chunks:
        for fact, kinds in zip(chunk.facts, chunk.covered_by, strict=True):
            total[fact.category] += 1
            covered[fact.category] += bool(kinds)
    return {
        c: {"facts": total[c], "covered": covered[c], "share": _share(covered[c], total[c])}
        for c in CATEGORIES
        if total[c]
    }


def summarise(chunks: Sequence[ChunkCoverage]) -> dict:
    ratios = [c.ratio for c in chunks if c.ratio is not None]
    facts_total = sum(len(c.facts) for c in chunks)
    covered = sum(len(c.covered) for c in chunks)
    return {
        "chunks": len(chunks),
        "chunks_with_facts": len(ratios),
        "kept_items": sum(len(chunk.item_kinds) for chunk in chunks),
        "facts": facts_total,
        "covered": covered,
        "pooled_coverage": _share(covered, facts_total),
        "coverage": estimate(ratios),
        "by_category": by_category(chunks),
        "by_kind": by_kind(chunks),
    }


def chunk_record(chunk: ChunkCoverage) -> dict:
    return {
        "chunk_id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "items": len(chunk.item_kinds),
        "ratio": None if chunk.ratio is None else round(chunk.ratio, 4),
        "facts": [
            {"text": f.text, "category": f.category, "covered_by": kinds}
            for f, kinds in zip(chunk.facts, chunk.covered_by, strict=True)
        ],
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# --- gold questions: asked or never asked ------------------------------------------------------
def asked_questions(
    documents: Sequence[dict], chunks: Sequence[Chunk], items: Sequence[TransferItem]
) -> list[dict]:
    """Each gold question of the documents the memory holds: the kinds of the kept items of its
    document whose answers hold its gold answer ("asked" by them), and whether the gold answer
    is among its document's facts."""
    document_of = {chunk.id: chunk.document_id for chunk in chunks}
    answers: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        answer = (item.kind, normalise(item.answer))
        answers.setdefault(document_of.get(item.chunk_id, ""), []).append(answer)
    facts_of: dict[str, list[str]] = {}
    for chunk in chunks:
        facts_of.setdefault(chunk.document_id, []).extend(map(normalise, facts(chunk.text)))
    held = {chunk.document_id for chunk in chunks}
    return [
        _question_record(document["id"], question, answers.get(document["id"], []), facts_of)
        for document in documents
        if document["id"] in held
        for question in document["questions"]
    ]


def _question_record(
    doc_id: str, question: dict, answers: list[tuple[str, str]], facts_of: dict[str, list[str]]
) -> dict:
    gold = normalise(question["answer"])
    asked_by = sorted({kind for kind, answer in answers if appears(gold, answer)})
    return {
        "doc_id": doc_id,
        "question": question["question"],
        "gold": question["answer"],
        "asked": bool(asked_by),
        "asked_by": asked_by,
        "gold_in_facts": any(appears(gold, fact) for fact in facts_of.get(doc_id, [])),
    }


def load_records(path: Path, mode: str) -> list[dict]:
    """Per-question records: quality.json's records[mode], or a JSON list of them."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(raw, dict):
        modes = raw.get("records", {})
        if mode not in modes:
            raise SystemExit(f"{path}: no records of mode {mode!r} (it has {sorted(modes)})")
        raw = modes[mode]
    if not isinstance(raw, list) or not all("question" in r and "contains" in r for r in raw):
        raise SystemExit(f"{path}: expected records with 'question' and 'contains'")
    return raw


def attach_records(questions: list[dict], records: Sequence[dict]) -> int:
    """Adds each record's "contains" to its question (matched on doc_id and question text, or
    on the text alone where records have no doc_id); returns how many were matched."""
    scores = {(r.get("doc_id"), r["question"]): float(r["contains"]) for r in records}
    matched = 0
    for question in questions:
        score = scores.get((question["doc_id"], question["question"]))
        if score is None:
            score = scores.get((None, question["question"]))
        if score is not None:
            question["contains"] = score
            matched += 1
    return matched


def split_accuracy(questions: Sequence[dict]) -> dict:
    """Accuracy (contains) of the scored questions, asked against never asked, and how many
    of the failures were never asked."""
    scored = [q for q in questions if "contains" in q]
    failed = [q for q in scored if not q["contains"]]
    return {
        "scored": len(scored),
        "asked": _accuracy([q for q in scored if q["asked"]]),
        "never_asked": _accuracy([q for q in scored if not q["asked"]]),
        "failed": len(failed),
        "failed_never_asked": sum(not q["asked"] for q in failed),
    }


def _accuracy(questions: Sequence[dict]) -> dict:
    return {"questions": len(questions), "contains": estimate([q["contains"] for q in questions])}


def question_summary(questions: Sequence[dict]) -> dict:
    """The share of questions asked, asked without each kind (by another one), and whose gold
    answer is among the facts found (how far the fact rules reach the gold answers)."""
    kinds = sorted({kind for q in questions for kind in q["asked_by"]})
    return {
        "documents": len({q["doc_id"] for q in questions}),
        "questions": len(questions),
        "asked": estimate([float(q["asked"]) for q in questions]),
        "asked_without": {
            kind: estimate([float(bool(set(q["asked_by"]) - {kind})) for q in questions])
            for kind in kinds
        },
        "gold_in_facts": estimate([float(q["gold_in_facts"]) for q in questions]),
    }


# --- the run -------------------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> dict:
    manifest = store.read_manifest(args.memory)
    chunks = store.read_chunks(args.memory, manifest)
    items = store.read_transfer_set(args.memory, manifest)
    items = [item for item in items if item.kind not in args.ignore_kinds]
    measured = coverage(chunks, items)
    result = {"memory": str(args.memory), "ignored_kinds": args.ignore_kinds}
    result.update(summarise(measured))
    if args.questions:
        result["questions"] = _questions_result(args, chunks, items)
    result["per_chunk"] = [chunk_record(chunk) for chunk in measured]
    return result


def _questions_result(
    args: argparse.Namespace, chunks: Sequence[Chunk], items: Sequence[TransferItem]
) -> dict:
    questions = asked_questions(load_documents(args.questions), chunks, items)
    if not questions:
        raise SystemExit(f"no document of {args.questions} is held by {args.memory} (ids differ?)")
    section = {"file": str(args.questions), **question_summary(questions)}
    if args.records:
        matched = attach_records(questions, load_records(args.records, args.mode))
        section["accuracy"] = {"records": str(args.records), "mode": args.mode, "matched": matched}
        section["accuracy"].update(split_accuracy(questions))
    section["per_question"] = questions
    return section


def render_markdown(result: dict) -> str:
    lines = [
        f"# Transfer-set coverage of {result['memory']}",
        "",
        "| chunks | with facts | kept items | facts | covered | mean coverage/chunk [95% CI] |",
        "|---|---|---|---|---|---|",
        f"| {result['chunks']} | {result['chunks_with_facts']} | {result['kept_items']} "
        f"| {result['facts']} | {result['covered']} ({_ratio(result['pooled_coverage'])}) "
        f"| {percent(result['coverage'])} |",
        "",
        "| fact rule | facts | covered | share |",
        "|---|---|---|---|",
        *(
            f"| {name} | {row['facts']} | {row['covered']} | {_ratio(row['share'])} |"
            for name, row in result["by_category"].items()
        ),
        "",
        "| item kind | kept items | copies of the chunk | facts covered | covered by it alone "
        "| covered without it (pooled) | facts/item |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {kind} | {row['items']} | {row['whole_chunk_copies']} | {row['facts_covered']} "
            f"| {row['covered_alone']} | {_ratio(row['coverage_without'])} "
            f"| {row['facts_per_item']} |"
            for kind, row in result["by_kind"].items()
        ),
    ]
    if result["ignored_kinds"]:
        lines += ["", f"Items of kinds {', '.join(result['ignored_kinds'])} left out."]
    if "questions" in result:
        lines += _questions_markdown(result["questions"])
    return "\n".join(lines) + "\n"


def _questions_markdown(section: dict) -> list[str]:
    lines = [
        "",
        f"Gold questions of {section['file']}: {section['questions']} questions of "
        f"{section['documents']} documents the memory holds.",
        "",
        "| gold answers | share [95% CI] |",
        "|---|---|",
        f"| in a kept item answer (asked) | {percent(section['asked'])} |",
        *(
            f"| asked without {kind} items | {percent(value)} |"
            for kind, value in section["asked_without"].items()
        ),
        f"| among the facts found | {percent(section['gold_in_facts'])} |",
    ]
    if "accuracy" in section:
        acc = section["accuracy"]
        lines += [
            "",
            f"Accuracy ({acc['mode']} records of {acc['records']}, {acc['scored']} questions "
            f"scored): {acc['failed_never_asked']} of {acc['failed']} failed questions were "
            "never asked.",
            "",
            "| questions | n | contains gold [95% CI] |",
            "|---|---|---|",
            *(
                f"| {name.replace('_', ' ')} | {acc[name]['questions']} "
                f"| {percent(acc[name]['contains']) if acc[name]['questions'] else '-'} |"
                for name in ("asked", "never_asked")
            ),
            *_failed_never_asked(section["per_question"]),
        ]
    return lines


def _failed_never_asked(questions: Sequence[dict], shown: int = 10) -> list[str]:
    """The first `shown` failed questions whose gold answer no kept item ever gave."""
    failed = [q for q in questions if q.get("contains") == 0 and not q["asked"]]
    if not failed:
        return []
    lines = ["", f"Failed and never asked (first {min(shown, len(failed))}):", ""]
    lines += [f"- {q['doc_id']}: {q['question']} (gold: {q['gold']})" for q in failed[:shown]]
    return lines


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("memory", type=Path, help="a memory folder")
    parser.add_argument("--questions", type=Path, help="JSON lines of documents and questions")
    parser.add_argument("--records", type=Path, help="per-question records (needs --questions)")
    parser.add_argument("--mode", default="stream", help="quality.json's records to read")
    parser.add_argument(
        "--ignore-kinds",
        default="",
        help="item kinds left out, a list (recitation: its answer is the whole chunk)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.ignore_kinds = [kind.strip() for kind in args.ignore_kinds.split(",") if kind.strip()]
    if args.records and not args.questions:
        parser.error("--records needs --questions")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coverage.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    (args.out / "coverage.md").write_text(render_markdown(result))


if __name__ == "__main__":
    main()
