"""The training schedule of one consolidation, as pure functions: which examples each step
sees, and each step's learning-rate factor. Shared by the reference trainer and the
engine's slot trainer, so both train every document on the same schedule."""

from __future__ import annotations

import random

from .config import ConsolidationConfig
from .records import Example, batches


def training_batches(
    examples: list[Example], config: ConsolidationConfig, rng: random.Random
) -> list[list[Example]]:
    """Every epoch's batches, in training order (see `length_grouped_batches`)."""
    plan: list[list[Example]] = []
    for epoch in range(config.epochs):
        order = examples[:]
        rng.shuffle(order)
        if not config.length_grouped_batches:
            plan.extend(batches(order, config.batch_size))
            continue
        order.sort(key=lambda example: len(example.student_ids))  # stable: random among equals
        grouped = list(batches(order, config.batch_size))
        plan.extend(grouped if epoch % 2 == 0 else grouped[::-1])
    return plan


def warmup_then_linear_decay(total_steps: int, warmup_ratio: float):
    """The learning-rate factor of each step: linear warm-up, then linear decay to zero."""
    # A fresh AdamW moves every weight by ~lr on its first steps whatever the gradient; without
    # warm-up those kicks, repeated at every transformation, make a streamed adapter drift.
    warmup = max(1, round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor
