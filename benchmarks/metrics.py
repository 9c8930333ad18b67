"""SQuAD-style answer metrics: normalised containment and token F1, with bootstrap CIs."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and the articles
    a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
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


def score_answer(prediction: str, gold: str) -> dict[str, float]:
    """Both metrics of one answer: {"contains": 0 or 1, "f1": token F1}."""
    return {"contains": contains_answer(prediction, gold), "f1": token_f1(prediction, gold)}


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return round(sum(values) / max(1, len(values)), 4)


def bootstrap_ci(
    values: Sequence[float], samples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(samples))
    return (means[int(0.025 * samples)], means[int(0.975 * samples) - 1])


def percent(value: dict, digits: int = 1) -> str:
    """An `estimate` of a share as "mean% [low-high]"."""
    low, high = value["ci95"]
    return f"{100 * value['mean']:.{digits}f}% [{100 * low:.{digits}f}-{100 * high:.{digits}f}]"


def estimate(values: Sequence[float]) -> dict:
    """The mean with its 95% bootstrap interval: {"mean", "ci95": [low, high]}."""
    values = list(values)
    low, high = bootstrap_ci(values)
    return {"mean": mean(values), "ci95": [round(low, 4), round(high, 4)]}
