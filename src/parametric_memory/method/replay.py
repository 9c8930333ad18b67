"""Rehearsal: earlier transfer items mixed into each new memory transformation, so that
writing new documents into the adapter does not overwrite old ones."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..records import TransferItem


def replay_count(new_items: int, held_items: int, replay_ratio: float) -> int:
    return min(held_items, round(new_items * replay_ratio))


def sample_replay(
    held: Sequence[TransferItem], new_items: int, replay_ratio: float, rng: random.Random
) -> list[TransferItem]:
    """A uniform sample of held items, `replay_ratio` times as many as the new ones."""
    return rng.sample(list(held), replay_count(new_items, len(held), replay_ratio))
