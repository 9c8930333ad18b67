"""How likely the base model finds a text after a context, with no decoding: one forward pass
over a batch of contexts, each followed by its continuation. Routing re-ranks its candidate
shards with it (a question is likelier after the passage that answers it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .generation import adapter_disabled, encode_texts
from .models import LoadedModel


def continuation_log_likelihoods(
    lm: LoadedModel, pairs: Sequence[tuple[str, str]], batch_size: int
) -> list[float]:
    """For each (context, continuation), the mean log-probability of the continuation's
    tokens after the context under the base model (the adapter switched off), both encoded
    as plain text. Pairs of similar length share a batch."""
    if not pairs:
        return []
    contexts = encode_texts(lm.tokenizer, [context for context, _ in pairs])
    continuations = encode_texts(lm.tokenizer, [continuation for _, continuation in pairs])
    if any(not ids for ids in continuations):
        raise ValueError("every continuation needs at least one token")
    scores = [0.0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(contexts[i]) + len(continuations[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        means = _batch_means(lm, [contexts[i] for i in batch], [continuations[i] for i in batch])
        for index, mean in zip(batch, means, strict=True):
            scores[index] = mean
    return scores


@torch.no_grad()
def _batch_means(
    lm: LoadedModel, contexts: list[list[int]], continuations: list[list[int]]
) -> list[float]:
    """Left-padded so every continuation ends at the last position: only the last
    (longest continuation + 1) positions' logits are computed."""
    sequences = [c + t for c, t in zip(contexts, continuations, strict=True)]
    width = max(len(s) for s in sequences)
    steps = max(len(t) for t in continuations)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=lm.device)
    mask = torch.tensor(
        [[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=lm.device
    )
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with adapter_disabled(lm.model):
        logits = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=steps + 1
        ).logits[:, :steps]
    targets = ids[:, width - steps :]
    log_probs = logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    means = []
    for row, continuation in enumerate(continuations):
        means.append(float(log_probs[row, steps - len(continuation) :].mean()))
    return means
