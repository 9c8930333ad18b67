"""How likely the base model finds a text after a context, with no decoding: one forward pass
over a batch of contexts, each followed by its continuation. Routing re-ranks its candidate
shards with it (a question is likelier after the passage that answers it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .generation import base_log_probabilities, encode_texts, left_padded, length_batches
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
    joined = [c + t for c, t in zip(contexts, continuations, strict=True)]
    for batch in length_batches(joined, batch_size):
        means = _batch_means(lm, [contexts[i] for i in batch], [continuations[i] for i in batch])
        for index, mean in zip(batch, means, strict=True):
            scores[index] = mean
    return scores


@torch.no_grad()
def _batch_means(
    lm: LoadedModel, contexts: list[list[int]], continuations: list[list[int]]
) -> list[float]:
    """Contexts left-padded, each continuation right-padded after its own tokens, where the
    padding changes none of their log-probabilities (attention is causal)."""
    input_ids, attention = left_padded(lm, contexts)
    steps = max(len(t) for t in continuations)
    pad = lm.tokenizer.pad_token_id
    tokens = torch.tensor([t + [pad] * (steps - len(t)) for t in continuations], device=lm.device)
    log_probs = base_log_probabilities(lm, input_ids, attention, tokens)
    return [float(log_probs[row, : len(t)].mean()) for row, t in enumerate(continuations)]
