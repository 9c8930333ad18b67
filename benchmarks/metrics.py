"""SQuAD-style answer metrics: normalised containment and token F1, with bootstrap CIs."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_answer(prediction: str, gold: str) -> float:
    gold_norm = normalise(gold)
    return float(bool(gold_norm) and gold_norm in normalise(prediction))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalise(prediction).split(), normalise(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def bootstrap_ci(
    values: Sequence[float], samples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(samples))
    return (means[int(0.025 * samples)], means[int(0.975 * samples) - 1])
