"""Logits at the answer positions of a batch of sequences, for the teacher, the student's
perplexity and distillation training.

Rows are right-padded and passed with no attention mask: each real token sees only the
tokens before it, which are all real, so padding at the end changes nothing before it.
Without a padding mask, transformers lets SDPA run causal attention on grouped key/value
heads directly (flash attention on CUDA). With left padding and a mask, it copied the keys
and values to every query head and summed their gradients back in every training step.

The LM head runs only on the positions that predict an answer token: a hook on the output
embedding gathers them from the last hidden states, so the model's own logit post-processing
(softcapping, scaling), which comes after the head, still applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """[rows, longest] token ids, each row's sequence first, `pad_id` after it."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return ids


def answer_positions(lengths: Sequence[int], answer_lens: Sequence[int]) -> torch.Tensor:
    """[rows, longest answer] the position whose logits predict each answer token (the
    answer ends its row's sequence); 0 past a row's answer."""
    lengths_ = torch.as_tensor(lengths)[:, None]
    answers = torch.as_tensor(answer_lens)[:, None]
    steps = torch.arange(max(answer_lens))[None, :]
    # Position t predicts token t+1: answer token j (at length - answer + j) comes from the
    # position before it.
    return torch.where(steps < answers, lengths_ - answers - 1 + steps, 0)


def answer_mask(answer_lens: Sequence[int]) -> torch.Tensor:
    """[rows, longest answer] True on each row's answer tokens."""
    answers = torch.as_tensor(answer_lens)[:, None]
    return torch.arange(max(answer_lens))[None, :] < answers


def logits_at(model, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[rows, positions, vocab] the logits of right-padded `input_ids` at `positions`
    ([rows, positions] indices into each row)."""
    with _head_on(model.get_output_embeddings(), positions):
        # logits_to_keep=0 hands the head every position; the hook keeps the wanted ones.
        return model(input_ids=input_ids, logits_to_keep=0).logits


@contextlib.contextmanager
def _head_on(head: torch.nn.Module, positions: torch.Tensor) -> Iterator[None]:
    def gather(module, args):
        hidden = args[0]
        index = positions[:, :, None].expand(-1, -1, hidden.shape[-1])
        return (hidden.gather(1, index), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
