"""The counting bigram model of makemore part 1: the baseline a neural net must beat.

P(next | previous) = (N[previous, next] + smoothing) / sum_next (N[previous, next] + smoothing),
N counting every pair of consecutive characters in the training names, `.` at both ends.
Add-one smoothing (smoothing=1) keeps a pair never seen from costing an infinite loss.
"""

from collections.abc import Sequence

import numpy as np

from jaxnet.lessons import names


def counts(words: Sequence[str]) -> np.ndarray:
    """N [27, 27] int64: N[a, b] = how often b follows a, `.` = 0 opening and closing each word."""
    pairs = names.windows(words, block_size=1)
    flat = pairs.x[:, 0].astype(np.int64) * names.VOCAB + pairs.y
    return np.bincount(flat, minlength=names.VOCAB**2).reshape(names.VOCAB, names.VOCAB)


def fit(words: Sequence[str], smoothing: float = 1.0) -> np.ndarray:
    """P [27, 27] float64, each row a distribution over the next character.

    A row with nothing to count (possible only with smoothing=0) is uniform.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}.")
    n = counts(words) + smoothing
    totals = n.sum(axis=1, keepdims=True)
    return np.where(totals > 0, n / np.maximum(totals, 1e-300), 1.0 / names.VOCAB)


def loss(probs: np.ndarray, words: Sequence[str]) -> float:
    """Mean negative log-likelihood in nats per predicted character (closing `.` included)."""
    pairs = names.windows(words, block_size=1)
    with np.errstate(divide="ignore"):
        return float(-np.log(probs[pairs.x[:, 0], pairs.y]).mean())
