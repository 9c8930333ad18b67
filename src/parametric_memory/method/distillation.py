"""The distillation pair: teacher targets (base model, chunk in context) computed once per
transfer item and kept compact as top-k log-probabilities plus the tail mass, and the KL
loss of the student (adapter active, no chunk) against them."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..engine import (
    LoadedModel,
    adapter_disabled,
    answer_mask,
    answer_positions,
    cache_keyword,
    chat_parts,
    encode_markup,
    encode_prompts,
    encode_texts,
    logits_at,
    returned_cache,
    right_padded,
    to_device,
)
from ..records import Chunk, Example, TransferItem, batches
from .prompts import teacher_prompt

_EPS = 1e-8


def tokenize_items(
    lm: LoadedModel, items: Sequence[TransferItem], chunks: dict[str, Chunk]
) -> list[Example]:
    tokenizer = lm.tokenizer
    end = [tokenizer.eos_token_id]
    before, after = chat_parts(tokenizer)
    head, tail = encode_markup(tokenizer, before), encode_markup(tokenizer, after)
    # The teacher's user turn is "<chunk part><item part>": split after the chunk, so the
    # chunk's tokens are shared by its items.
    teacher_users = [teacher_prompt(chunks[item.chunk_id].text, item.prompt) for item in items]
    splits = [
        user.index(chunks[item.chunk_id].text) + len(chunks[item.chunk_id].text)
        for item, user in zip(items, teacher_users, strict=True)
    ]
    first_of_chunk = {}
    for index, item in enumerate(items):
        first_of_chunk.setdefault(item.chunk_id, index)
    chunk_parts = encode_texts(
        tokenizer, [teacher_users[i][: splits[i]] for i in first_of_chunk.values()]
    )
    prefixes = {
        chunk_id: head + ids for chunk_id, ids in zip(first_of_chunk, chunk_parts, strict=True)
    }
    answers = [ids + end for ids in encode_texts(tokenizer, [item.answer for item in items])]
    students = encode_prompts(tokenizer, [item.prompt for item in items])
    suffixes = encode_texts(
        tokenizer, [user[split:] for user, split in zip(teacher_users, splits, strict=True)]
    )
    return [
        Example(
            item, student + answer, prefixes[item.chunk_id], suffix + tail + answer, len(answer)
        )
        for item, student, suffix, answer in zip(items, students, suffixes, answers, strict=True)
    ]


def answer_logits(model, sequences: list[list[int]], answer_lens: list[int], pad_id: int):
    """Logits predicting each sequence's answer tokens (which end it), as a [batch,
    max_answer, vocab] tensor (left-aligned per row) and a matching mask."""
    device = next(model.parameters()).device
    input_ids = to_device(right_padded(sequences, pad_id), device)
    positions = to_device(answer_positions([len(s) for s in sequences], answer_lens), device)
    logits = logits_at(model, input_ids, positions)
    return logits, to_device(answer_mask(answer_lens), device)


def _left_aligned(
    logits: torch.Tensor, answer_lens: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned answer logits [batch, longest, vocab] moved to the left of each row, and
    the mask of the real positions (the rest repeat the row's last position)."""
    longest = logits.shape[1]
    lens = torch.tensor(answer_lens, device=logits.device)
    steps = torch.arange(longest, device=logits.device)
    mask = steps[None, :] < lens[:, None]
    source = (longest - lens[:, None] + steps[None, :]).clamp(max=longest - 1)
    index = source[:, :, None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index), mask


def answer_targets(sequences: list[list[int]], answer_lens: list[int]) -> torch.Tensor:
    longest = max(answer_lens)
    targets = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, (seq, length) in enumerate(zip(sequences, answer_lens, strict=True)):
        targets[row, :length] = torch.tensor(seq[len(seq) - length :])
    return targets


@torch.inference_mode()
def compute_teacher_targets(
    lm: LoadedModel,
    examples: list[Example],
    top_k: int,
    batch_size: int,
    share_chunk_cache: bool | None = None,
) -> None:
    """Fill each example's top-k teacher log-probs and answer NLL, adapter disabled.

    With `share_chunk_cache` (the default on a CPU) the chunk's KV cache is computed once
    and shared by all of its items. Without it (the default on a GPU) the items of all
    chunks are batched by length, each with its whole prompt: recomputing the chunk costs a
    GPU little, while a small batch per chunk makes many small passes, each bound by the
    host's kernel launches, and leaves the GPU mostly waiting.
    """
    if share_chunk_cache is None:
        share_chunk_cache = lm.backend.teacher_shares_chunk_cache
    # Every batch is queued before any result comes back to the host: a copy back per batch
    # would leave the GPU idle while the host prepares the next one.
    computed: list[tuple[list[Example], _Targets]] = []
    with adapter_disabled(lm.model):
        if not share_chunk_cache:
            by_length = sorted(examples, key=lambda e: len(e.teacher_ids))
            for batch in batches(by_length, batch_size):
                computed.append((batch, _teacher_batch_whole(lm, batch, top_k)))
        else:
            by_prefix: dict[tuple[int, ...], list[Example]] = {}
            for example in examples:
                by_prefix.setdefault(tuple(example.teacher_prefix_ids), []).append(example)
            for prefix, group in by_prefix.items():
                prefix_cache = _prefix_cache(lm, list(prefix))
                for batch in batches(group, batch_size):
                    targets = _teacher_batch(lm, prefix_cache, len(prefix), batch, top_k)
                    computed.append((batch, targets))
    for batch, targets in computed:
        _keep_targets(batch, targets)


def _prefix_cache(lm: LoadedModel, prefix: list[int]):
    ids = torch.tensor([prefix], device=lm.device)
    return returned_cache(lm.model(input_ids=ids, use_cache=True, logits_to_keep=1))


def _teacher_batch(lm, prefix_cache, prefix_len: int, batch: list[Example], top_k: int) -> _Targets:
    device = lm.device
    width = max(len(e.teacher_suffix_ids) for e in batch)
    ids = torch.full((len(batch), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(batch), prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    ends = torch.tensor([len(e.teacher_suffix_ids) for e in batch])
    for row, example in enumerate(batch):
        ids[row, : len(example.teacher_suffix_ids)] = torch.tensor(example.teacher_suffix_ids)
        mask[row, prefix_len : prefix_len + len(example.teacher_suffix_ids)] = 1
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(len(batch))
    positions = torch.arange(prefix_len, prefix_len + width).expand(len(batch), -1)
    logits = lm.model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **{cache_keyword(lm.model): cache},
    ).logits
    lens = [e.answer_len for e in batch]
    # Each row's answer ends its suffix; right-align rows on their suffix ends, then take
    # the answers (position t predicts token t+1, so logits end one before the suffix).
    tail = max(lens) + 1
    source = (torch.arange(width)[None, :] - (width - ends[:, None])).clamp(min=0).to(device)
    source = source[:, -tail:]
    aligned = logits.gather(1, source[:, :-1, None].expand(-1, -1, logits.shape[-1]))
    answer_logits_, mask = _left_aligned(aligned, lens)
    targets, _ = _left_aligned(ids.to(device).gather(1, source[:, 1:])[:, :, None], lens)
    return _top_k_targets(answer_logits_, mask, targets, top_k)


def _teacher_batch_whole(lm: LoadedModel, batch: list[Example], top_k: int) -> _Targets:
    sequences = [e.teacher_ids for e in batch]
    lens = [e.answer_len for e in batch]
    logits, mask = answer_logits(lm.model, sequences, lens, lm.tokenizer.pad_token_id)
    targets = to_device(answer_targets(sequences, lens), logits.device)[:, :, None]
    return _top_k_targets(logits, mask, targets, top_k)


_Targets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""A batch's teacher top-k log-probs and ids [rows, answer, k] and answer NLL [rows]."""


def _top_k_targets(
    answer_logits_: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, top_k: int
) -> _Targets:
    logprobs = torch.log_softmax(answer_logits_, dim=-1, dtype=torch.float32)
    values, indices = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
    token_nll = -logprobs.gather(-1, targets).squeeze(-1) * mask
    return values, indices, token_nll.sum(-1) / mask.sum(-1)


def _keep_targets(batch: list[Example], targets: _Targets) -> None:
    """Store each row's top-k teacher log-probs and answer NLL in its example (on the CPU)."""
    values, indices, nll = targets
    values, indices, nll = values.cpu(), indices.cpu(), nll.cpu().tolist()
    for row, example in enumerate(batch):
        example.topk_logprobs = values[row, : example.answer_len].clone()
        example.topk_ids = indices[row, : example.answer_len].clone()
        example.teacher_nll = nll[row]


@torch.inference_mode()
def student_nll(lm: LoadedModel, examples: list[Example], batch_size: int) -> list[float]:
    """Mean answer NLL under the current student (adapter active, no chunk), in input order;
    batched by length."""
    pad = lm.tokenizer.pad_token_id
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].student_ids))
    means = []  # kept on the device until every batch is queued, as the teacher's targets
    for positions in batches(order, batch_size):
        sequences = [examples[i].student_ids for i in positions]
        lens = [examples[i].answer_len for i in positions]
        logits, mask = answer_logits(lm.model, sequences, lens, pad)
        targets = to_device(answer_targets(sequences, lens), logits.device)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        means.append((nll * mask).sum(-1) / mask.sum(-1))
    result = [0.0] * len(examples)
    for i, value in zip(order, torch.cat(means).tolist(), strict=True):
        result[i] = value
    return result
