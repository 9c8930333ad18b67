"""Teacher targets are the same whether a chunk's KV cache is shared by its items (the CPU
path) or every item is run with its whole prompt, batched by length (the GPU path)."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_consolidate import CUDA, student
from test_fast_generation import model_dir  # noqa: F401

from parametric_memory.method.distillation import (
    compute_teacher_targets,
    student_nll,
    tokenize_items,
)
from parametric_memory.records import Chunk, TransferItem

CHUNKS = {
    "a": Chunk("a", "doc-a", 0, "The Orsk ferry sails at nine and docks at Velm by noon.", 16),
    "b": Chunk("b", "doc-b", 0, "Tamsin Elveroy painted the lighthouse violet in May.", 14),
}
ITEMS = [
    TransferItem("a", "cloze", "When does the Orsk ferry sail?", "At nine."),
    TransferItem("a", "recite", "Recite the text about the ferry.", CHUNKS["a"].text),
    TransferItem("b", "entity", "What does the text say about Tamsin Elveroy?", "She painted."),
    TransferItem("b", "cloze", "Which colour is the lighthouse?", "Violet, since May."),
    TransferItem("a", "entity", "Where does the ferry dock?", "At Velm by noon."),
]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_whole_prompts_batched_by_length_give_the_shared_cache_targets(
    model_dir,  # noqa: F811
    device,
):
    lm = student(model_dir, device)
    shared, whole = (tokenize_items(lm, ITEMS, CHUNKS) for _ in range(2))
    compute_teacher_targets(lm, shared, top_k=5, batch_size=2, share_chunk_cache=True)
    compute_teacher_targets(lm, whole, top_k=5, batch_size=2, share_chunk_cache=False)
    for cached, recomputed in zip(shared, whole, strict=True):
        assert recomputed.topk_logprobs.shape == (cached.answer_len, 5)
        torch.testing.assert_close(recomputed.topk_logprobs, cached.topk_logprobs)
        assert torch.equal(recomputed.topk_ids, cached.topk_ids)
        assert recomputed.teacher_nll == pytest.approx(cached.teacher_nll, rel=1e-4)


def test_student_nll_batched_by_length_keeps_the_input_order(model_dir):  # noqa: F811
    lm = student(model_dir)
    examples = tokenize_items(lm, ITEMS, CHUNKS)
    alone = [student_nll(lm, [example], batch_size=1)[0] for example in examples]
    assert student_nll(lm, examples, batch_size=2) == pytest.approx(alone, rel=1e-5)
    assert len(set(alone)) == len(alone)  # distinct values, so an order mix-up would show


def test_the_shared_chunk_cache_is_passed_under_this_transformers_name(model_dir):  # noqa: F811
    """transformers 5.2x renamed `past_key_values` to `cache` (the old name goes in 5.40)."""
    lm = student(model_dir, "cpu")
    examples = tokenize_items(lm, ITEMS, CHUNKS)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        compute_teacher_targets(lm, examples, top_k=5, batch_size=2, share_chunk_cache=True)
    assert all(example.topk_ids is not None for example in examples)
