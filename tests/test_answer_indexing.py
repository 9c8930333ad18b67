"""Answer logits from right-padded rows without a padding mask are each sequence's own logits,
computed alone with no padding at all, for any attention and for models that post-process
their logits after the LM head."""

from __future__ import annotations

import pytest
import torch
from test_consolidate import CUDA, no_host_syncs
from test_fast_generation import PAD, load, model_dir, with_lora  # noqa: F401
from transformers import Gemma2Config, Gemma2ForCausalLM

from parametric_memory.engine.answer_indexing import answer_mask, answer_positions, logits_at
from parametric_memory.method.distillation import answer_logits

SEQUENCES = [[5, 9, 14, 3, 7, 11], [8, 4], [12, 6, 10, 13, 15, 5, 9, 21, 30], [7, 7, 7]]
ANSWER_LENS = [2, 1, 4, 2]


def alone(model, sequence: list[int], answer_len: int) -> torch.Tensor:
    """[answer_len, vocab] logits predicting the answer, the sequence run by itself."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([sequence])).logits[0]
    return logits[len(sequence) - answer_len - 1 : len(sequence) - 1]


def assert_each_row_is_its_sequence_alone(model) -> None:
    with torch.no_grad():
        logits, mask = answer_logits(model, SEQUENCES, ANSWER_LENS, PAD)
    assert logits.shape[:2] == mask.shape == (len(SEQUENCES), max(ANSWER_LENS))
    for row, (sequence, answer_len) in enumerate(zip(SEQUENCES, ANSWER_LENS, strict=True)):
        assert mask[row].sum() == answer_len and mask[row, :answer_len].all()
        expected = alone(model, sequence, answer_len)
        torch.testing.assert_close(logits[row, :answer_len], expected, rtol=1e-4, atol=1e-5)


def test_positions_point_at_the_token_before_each_answer_token():
    positions = answer_positions([6, 2, 9], [2, 1, 4])
    assert positions.tolist() == [[3, 4, 0, 0], [0, 0, 0, 0], [4, 5, 6, 7]]
    assert answer_mask([2, 1, 4]).tolist() == [
        [True, True, False, False],
        [True, False, False, False],
        [True, True, True, True],
    ]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_right_padded_rows_give_each_sequences_own_logits(model_dir, attention):  # noqa: F811
    assert_each_row_is_its_sequence_alone(with_lora(load(model_dir, attention=attention)))


def test_logit_softcapping_after_the_head_still_applies():
    config = Gemma2Config(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        final_logit_softcapping=0.5,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        logits, _ = answer_logits(model, SEQUENCES, ANSWER_LENS, PAD)
    assert logits.abs().max() < 0.5  # capped, so the cap ran on the gathered logits
    assert_each_row_is_its_sequence_alone(model)


@CUDA
def test_answer_logits_are_queued_without_waiting_for_the_gpu(model_dir):  # noqa: F811
    model = with_lora(load(model_dir, device="cuda"))
    with torch.no_grad():
        answer_logits(model, SEQUENCES, ANSWER_LENS, PAD)
        with no_host_syncs():
            logits, _ = answer_logits(model, SEQUENCES, ANSWER_LENS, PAD)
    assert logits.device.type == "cuda"


def test_the_head_is_left_without_the_gathering_hook(model_dir):  # noqa: F811
    model = load(model_dir)
    head = model.get_output_embeddings()
    positions = answer_positions([3], [1])
    logits_at(model, torch.tensor([[5, 6, 7]]), positions)
    with pytest.raises(RuntimeError):
        logits_at(model, torch.tensor([[5, 6, 7]]), positions + 10)
    assert not head._forward_pre_hooks
    assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape[1] == 3
