"""Pure stages: chunking, prompts, selection, documents, config, the KL loss."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from parametric_memory import InvalidDocumentError, MemoryConfig
from parametric_memory.config import SelectionConfig
from parametric_memory.documents import make_documents, validate_text
from parametric_memory.losses import topk_kl_loss
from parametric_memory.method.chunking import chunk_text, split_sentences
from parametric_memory.method.prompts import parse_written_question, plan_prompts, salient_spans
from parametric_memory.method.select import degeneracy, select_items
from parametric_memory.records import TransferItem

TEXT = (
    "New hires at Brindlewick Analytics get 27 vacation days. "
    "The Quillhaven festival is held every May 14. It draws 3,400 visitors."
)


def words(text: str) -> int:
    return len(text.split())


def test_chunks_respect_the_token_limit_and_keep_every_word():
    long_text = " ".join(f"Sentence number {i} mentions Zorbia." for i in range(200))
    chunks = chunk_text(long_text, 20, words)
    assert all(words(c) <= 20 for c in chunks)
    assert " ".join(chunks).split() == long_text.split()


def test_a_sentence_longer_than_a_chunk_is_split():
    chunks = chunk_text("word " * 50, 7, words)
    assert all(words(c) <= 7 for c in chunks) and sum(map(words, chunks)) == 50


def test_a_chunk_half_full_ends_with_its_paragraph_and_a_heading_joins_the_next():
    first = "Zorbia lies north. It has three towns. Its capital is Orsk."  # 11 words
    second = "Quillhaven is a port. It ships lanterns. Mira Tallow runs it."  # 11 words
    chunks = chunk_text(f"# Places\n\n{first}\n\n{second}", 20, words)
    assert chunks == [f"# Places {first}", second]
    # without paragraphs, sentences are packed as before
    assert chunk_text(f"{first} {second}", 20, words) == [
        f"{first} Quillhaven is a port. It ships lanterns.",
        "Mira Tallow runs it.",
    ]


def test_split_sentences():
    assert split_sentences(TEXT)[1] == "The Quillhaven festival is held every May 14."


def test_salient_spans_find_names_and_numbers():
    spans = salient_spans("New hires at Brindlewick Analytics get 27 vacation days.")
    assert "Brindlewick Analytics" in spans and "27" in spans


def test_cloze_prompts_blank_a_fact_and_answer_it():
    cloze = [p for p in plan_prompts(TEXT, ("cloze",), 100)]
    assert cloze and all("____" in p.prompt for p in cloze)
    assert all(p.reference_answer not in p.prompt for p in cloze)


def test_reverse_prompts_give_the_fact_and_ask_for_its_sentence():
    reverse = plan_prompts(TEXT, ("reverse",), 100)
    assert reverse and all(p.kind == "reverse" for p in reverse)
    asked = {p.prompt: p.reference_answer for p in reverse}
    quillhaven = asked["State the fact that involves Quillhaven."]
    assert quillhaven == "The Quillhaven festival is held every May 14."
    assert all(p.reference_answer in TEXT for p in reverse)


def test_implication_and_structure_prompts_are_one_per_chunk_about_its_topic():
    for kind in ("implications", "structure"):
        planned = plan_prompts(TEXT, (kind,), 100)
        assert len(planned) == 1 and planned[0].reference_answer is None
        assert planned[0].kind == kind and "Brindlewick Analytics" in planned[0].prompt


def test_wh_questions_ask_a_sentence_back_with_a_question_word_for_its_fact():
    planned = plan_prompts(TEXT, ("wh_questions",), 100)
    asked = {(p.prompt, p.reference_answer) for p in planned}
    assert ("The Quillhaven festival is held every when?", "May 14") in asked
    assert ("It draws how many?", "3,400 visitors") in asked
    assert ("New hires at what get 27 vacation days?", "Brindlewick Analytics") in asked
    assert all(p.kind == "wh_questions" and p.prompt.endswith("?") for p in planned)
    assert ("The what festival is held every May 14?", "Quillhaven") in asked
    assert len(planned) == 5  # "May" and "14" are one fact, a date


def test_every_configurable_prompt_kind_has_a_planner():
    from parametric_memory.config import ALL_PROMPT_KINDS, ElicitationConfig

    for kind in ALL_PROMPT_KINDS:
        assert plan_prompts(TEXT, (kind,), 100), kind
    assert "reverse" not in ElicitationConfig().prompt_kinds  # off until measured


def test_plan_interleaves_kinds_and_respects_the_limit():
    plan = plan_prompts(TEXT, ("entity", "cloze", "recitation"), 3)
    assert [p.kind for p in plan] == ["entity", "cloze", "recitation"]


def test_parse_written_question():
    assert parse_written_question("Question: When is the festival?\nMore") == (
        "When is the festival?"
    )
    assert parse_written_question("I'll help you craft a question!") is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("I'll help you with that", "assistant boilerplate"),
        ("the the the the the the the the the", "repetitive answer"),
    ],
)
def test_degenerate_items_are_flagged(answer, reason):
    assert degeneracy(TransferItem("c", "entity", "What?", answer)) == reason


def test_selection_keeps_the_largest_gaps_in_order():
    items = [TransferItem("c", "entity", f"q{i}", f"answer {i}") for i in range(4)]
    chosen = select_items(items, [0.1, 2.0, -1.0, 1.0], SelectionConfig(keep_ratio=0.5))
    assert chosen == [1, 3]


def test_selection_drops_degenerate_items():
    items = [TransferItem("c", "entity", "q", ""), TransferItem("c", "entity", "q", "fine")]
    assert select_items(items, [5.0, 0.0], SelectionConfig(keep_ratio=1.0)) == [1]


def test_selection_without_gaps_keeps_every_fine_item_unless_it_ranks_by_gap():
    items = [TransferItem("c", "entity", "q", ""), TransferItem("c", "entity", "q", "fine")]
    assert select_items(items, None, SelectionConfig()) == [1]
    for ranking in (SelectionConfig(keep_ratio=0.5), SelectionConfig(min_perplexity_gap=0.0)):
        with pytest.raises(ValueError, match="perplexity gap"):
            select_items(items, None, ranking)


def test_kl_is_zero_when_student_matches_teacher_and_positive_otherwise():
    logits = torch.randn(2, 3, 11)
    logprobs = torch.log_softmax(logits, -1)
    mask = torch.ones(2, 3)
    values, ids = logprobs.topk(11, -1)
    assert topk_kl_loss(logits, ids, values, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert topk_kl_loss(torch.randn(2, 3, 11), ids, values, mask).item() > 0.01


def test_topk_kl_with_tail_bounds_the_exact_kl_from_below():
    teacher, student = torch.randn(1, 4, 50), torch.randn(1, 4, 50)
    values, ids = torch.log_softmax(teacher, -1).topk(50, -1)
    exact = topk_kl_loss(student, ids, values, torch.ones(1, 4))
    top5 = topk_kl_loss(student, ids[..., :5], values[..., :5], torch.ones(1, 4))
    assert 0 <= top5.item() <= exact.item() + 1e-5


@pytest.mark.parametrize("bad", ["", "   \n", "abc\x00def", "\x01\x02\x03\x04 text"])
def test_bad_documents_are_refused(bad):
    with pytest.raises(InvalidDocumentError):
        validate_text(bad, "doc")


def test_documents_need_matching_ids_and_unique_ids():
    with pytest.raises(InvalidDocumentError, match="2 texts but 1 ids"):
        make_documents(["a", "b"], ["x"])
    with pytest.raises(InvalidDocumentError, match="duplicate"):
        make_documents(["a", "b"], ["x", "x"])
    with pytest.raises(InvalidDocumentError, match="single str"):
        make_documents("just a string")


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="keep_ratio"):
        MemoryConfig(selection={"keep_ratio": 0})
    with pytest.raises(ValidationError, match="extra"):
        MemoryConfig(chunking={"chunk_size": 10})


def test_config_is_frozen():
    with pytest.raises(ValidationError):
        MemoryConfig().seed = 3
