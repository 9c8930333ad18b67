"""The transfer prompts of elicitation, and the chat layout shared by teacher, student and
answering. Pure functions of the chunk text: no model needed.

Kinds built from the chunk itself carry a reference answer taken from the text (cloze,
continuation, recitation); the teacher still supplies the target distribution over those
tokens. The other kinds are answered by the teacher (the model with the chunk in context).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .chunking import split_sentences

PROMPT_VERSION = 1
"""Stamped into every manifest. Bump it with any change to the text below, or to the plain
chat layout of `engine.generation` (used where a tokenizer has none): a memory's transfer
items were written, and are retrained on `forget`, under the prompts of its version. A new
kind, off by default, changes no memory's items and needs no bump."""

TEACHER_TEMPLATE = "Read this text:\n\n{chunk}\n\n{prompt}"
QUESTION_WRITER_PROMPT = (
    "Write one question about a specific fact (a name, number, date or place) in this sentence "
    'of the text: "{sentence}" Write only the question.'
)
BLANK = "____"
RECALL_TEMPLATE = "Tell me everything you know about {query}."
"""What `ParametricMemory.recall` asks the memory (no text in the prompt) to write out."""
QUESTION_LIKELIHOOD_TEMPLATE = (
    "Passage: {chunk}\nPlease write a question based on this passage.\nQuestion:"
)
"""What the base model reads before a question when routing re-ranks shards by how likely it
finds the question after each one's chunk (UPR's layout, plain text: no chat turns). It
changes no transfer item, so no `PROMPT_VERSION` bump."""
FOLLOW_UP_PROMPTS = (
    "{query}",
    "What do you remember about {topic}?",
    "List the facts you know about {topic}.",
    "Summarize what you know about {topic}.",
    "Which names, numbers and dates do you know about {topic}?",
    "Explain {topic} in a few sentences.",
)
"""Extra phrasings asked (in order) when more than one passage is wanted for a query. The
first passage is always `memory.recall(query)`."""

_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|van|von|and|&)?\s*[A-Z][\w'’-]*)*")
_NUMBER = re.compile(r"\b\d[\d,.:/%-]*\b(?:\s+(?:percent|per cent|[a-z]+s))?")
_YEAR = re.compile(r"1\d{3}|20\d{2}")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"\b(?:(?:{_MONTHS}) \d{{1,2}}(?:, \d{{4}})?|\d{{1,2}} (?:{_MONTHS})(?: \d{{4}})?"
    rf"|(?:{_MONTHS}) \d{{4}})\b"
)
_STOPWORD_STARTS = {
    "The",
    "A",
    "An",
    "In",
    "On",
    "At",
    "It",
    "Its",
    "This",
    "That",
    "These",
    "Those",
    "He",
    "She",
    "They",
    "We",
    "I",
    "You",
    "His",
    "Her",
    "Their",
    "Our",
    "After",
    "Before",
    "When",
    "While",
    "If",
    "As",
    "By",
    "For",
    "From",
    "With",
    "Each",
    "Every",
    "All",
    "Some",
    "New",
}


@dataclass(frozen=True)
class PlannedPrompt:
    kind: str
    prompt: str
    reference_answer: str | None = None
    """Answer taken from the text; None when the teacher must write it."""


def salient_spans(sentence: str) -> list[str]:
    """Names and numbers in a sentence, longest first: the facts a question would ask for."""
    spans = [m.group(0).strip() for m in _NUMBER.finditer(sentence)]
    for match in _CAPITALISED.finditer(sentence):
        words = match.group(0).split()
        while words and words[0] in _STOPWORD_STARTS:
            words = words[1:]
        if words:
            spans.append(" ".join(words))
    unique = list(dict.fromkeys(s for s in spans if len(s) > 1))
    return sorted(unique, key=len, reverse=True)


def chunk_topic(chunk: str) -> str:
    """The chunk's most frequent name: what a user would ask about."""
    counts: dict[str, int] = {}
    for sentence in split_sentences(chunk):
        for span in salient_spans(sentence):
            if not span[0].isdigit():
                counts[span] = counts.get(span, 0) + 1
    if not counts:
        return " ".join(chunk.split()[:6])
    return max(counts, key=lambda span: (counts[span], len(span)))


def plan_prompts(chunk: str, kinds: tuple[str, ...], limit: int) -> list[PlannedPrompt]:
    """Interleave the kinds' prompts (round robin) so that any `limit` keeps a mix."""
    per_kind = [_PLANNERS[kind](chunk) for kind in kinds]
    planned: list[PlannedPrompt] = []
    for round_index in range(max((len(p) for p in per_kind), default=0)):
        for prompts in per_kind:
            if round_index < len(prompts):
                planned.append(prompts[round_index])
    return planned[:limit]


def _entity_prompts(chunk: str) -> list[PlannedPrompt]:
    names: list[str] = []
    for sentence in split_sentences(chunk):
        names.extend(s for s in salient_spans(sentence) if not s[0].isdigit())
    return [
        PlannedPrompt("entity", f"What do you know about {name}?") for name in dict.fromkeys(names)
    ]


def _cloze_prompts(chunk: str) -> list[PlannedPrompt]:
    prompts = []
    for sentence in split_sentences(chunk):
        for span in salient_spans(sentence)[:2]:
            blanked = sentence.replace(span, BLANK, 1)
            prompts.append(
                PlannedPrompt("cloze", f"Fill in the blank: {blanked}", reference_answer=span)
            )
    return prompts


def _continuation_prompts(chunk: str) -> list[PlannedPrompt]:
    prompts = []
    for sentence in split_sentences(chunk):
        words = sentence.split()
        if len(words) < 6:
            continue
        cut = max(3, len(words) // 3)
        prefix, rest = " ".join(words[:cut]), " ".join(words[cut:])
        prompts.append(PlannedPrompt("continuation", f"Complete the sentence: {prefix} ...", rest))
    return prompts


def _recitation_prompts(chunk: str) -> list[PlannedPrompt]:
    topic = chunk_topic(chunk)
    return [PlannedPrompt("recitation", f"Tell me everything you know about {topic}.", chunk)]


def _summary_prompts(chunk: str) -> list[PlannedPrompt]:
    return [PlannedPrompt("summary", f"Summarize the key facts about {chunk_topic(chunk)}.")]


def _paraphrase_prompts(chunk: str) -> list[PlannedPrompt]:
    return [
        PlannedPrompt("paraphrase", f"Explain in your own words: {sentence}")
        for sentence in split_sentences(chunk)
    ]


def _reverse_prompts(chunk: str) -> list[PlannedPrompt]:
    """A name or number given, its sentence asked for: the other direction of a cloze (a
    model that learned "X was founded by Y" does not thereby answer "What did Y found?")."""
    return [
        PlannedPrompt("reverse", f"State the fact that involves {span}.", reference_answer=sentence)
        for sentence in split_sentences(chunk)
        for span in salient_spans(sentence)[:2]
    ]


def _implication_prompts(chunk: str) -> list[PlannedPrompt]:
    """SEAL's self-edit: what the text implies, restated, so facts are also learned in the
    form of their consequences."""
    topic = chunk_topic(chunk)
    return [PlannedPrompt("implications", f"List the implications of the facts about {topic}.")]


def _structure_prompts(chunk: str) -> list[PlannedPrompt]:
    """Cartridges' structuring seed: the facts laid out as key: value lines."""
    topic = chunk_topic(chunk)
    return [PlannedPrompt("structure", f"List the facts about {topic} as key: value lines.")]


def _question_prompts(chunk: str) -> list[PlannedPrompt]:
    # The prompt is a placeholder: elicitation asks the model to write the question first.
    return [
        PlannedPrompt("questions", QUESTION_WRITER_PROMPT.format(sentence=sentence))
        for sentence in split_sentences(chunk)
    ]


def _wh_question_prompts(chunk: str) -> list[PlannedPrompt]:
    """Each sentence asked back as a question, one of its four longest facts (a date, name
    or number) replaced by a question word ("... is held every when?"), answered with it:
    a cloze in the form of the questions a memory is asked (the model, asked to write a
    question for a given answer, does not)."""
    prompts = []
    for sentence in split_sentences(chunk):
        for span in _facts(sentence)[:4]:
            asked = sentence.replace(span, _question_word(span), 1).rstrip(" .!;:")
            prompts.append(PlannedPrompt("wh_questions", asked + "?", reference_answer=span))
    return prompts


def _facts(sentence: str) -> list[str]:
    """Dates ("May 14", "February 7, 2016"), then the salient spans outside them, longest
    first."""
    dates = [m.group(0) for m in _DATE.finditer(sentence)]
    others = [s for s in salient_spans(sentence) if not any(s in date for date in dates)]
    return sorted(dates + others, key=len, reverse=True)


def _question_word(span: str) -> str:
    """The word that asks for `span`: "when" for a year or date, "how many" for another
    number, "what" for a name."""
    if _YEAR.fullmatch(span) or _DATE.fullmatch(span):
        return "when"
    return "how many" if span[0].isdigit() else "what"


_PLANNERS = {
    "entity": _entity_prompts,
    "cloze": _cloze_prompts,
    "continuation": _continuation_prompts,
    "recitation": _recitation_prompts,
    "summary": _summary_prompts,
    "paraphrase": _paraphrase_prompts,
    "questions": _question_prompts,
    "wh_questions": _wh_question_prompts,
    "reverse": _reverse_prompts,
    "implications": _implication_prompts,
    "structure": _structure_prompts,
}


def question_likelihood_pair(chunk: str, question: str) -> tuple[str, str]:
    """The context and the continuation whose likelihood scores `chunk` for `question`."""
    return QUESTION_LIKELIHOOD_TEMPLATE.format(chunk=chunk.strip()), " " + question.strip()


def teacher_prompt(chunk: str, prompt: str) -> str:
    return TEACHER_TEMPLATE.format(chunk=chunk, prompt=prompt)


def parse_written_question(text: str) -> str | None:
    """The first line of a model-written question, if it is one."""
    for line in text.strip().splitlines():
        line = line.strip().strip('"').strip()
        line = re.sub(r"^(question\s*\d*\s*[:.)-]\s*|\d+[.)]\s*)", "", line, flags=re.I)
        if line.endswith("?") and 3 <= len(line.split()) <= 40:
            return line
    return None
