"""The counting bigram model: counts every pair, add-one smoothing, loss in nats per character."""

import math

import numpy as np
import pytest

from jaxnet.lessons import bigram, names


def test_counts_every_pair_with_dots_at_both_ends():
    n = bigram.counts(["ab", "b"])
    expected = np.zeros((27, 27), np.int64)
    for a, b in [(".", "a"), ("a", "b"), ("b", "."), (".", "b"), ("b", ".")]:
        expected[names.ALPHABET.index(a), names.ALPHABET.index(b)] += 1
    np.testing.assert_array_equal(n, expected)


def test_add_one_smoothing_and_loss_by_hand():
    probs = bigram.fit(["ab"])
    np.testing.assert_allclose(probs.sum(1), 1.0)
    # every row saw one pair: P(seen) = 2 / 28; the three pairs of "ab" are each seen once
    assert bigram.loss(probs, ["ab"]) == pytest.approx(-math.log(2 / 28))
    # ".z" was never seen in a row that saw one pair; "z." is in a row never seen: uniform
    assert bigram.loss(probs, ["z"]) == pytest.approx(-(math.log(1 / 28) + math.log(1 / 27)) / 2)


def test_without_smoothing_an_unseen_pair_costs_infinity():
    mle = bigram.fit(["ab"], smoothing=0)
    assert bigram.loss(mle, ["ba"]) == math.inf
    np.testing.assert_allclose(mle[names.ALPHABET.index("z")], 1 / 27)  # no data: uniform
    with pytest.raises(ValueError, match="smoothing"):
        bigram.fit(["ab"], smoothing=-1)


def test_fitted_on_surnames_it_beats_uniform_and_its_rows_are_the_counts():
    train, _, test = names.split(names.load("surnames"))
    counts = bigram.counts(train)
    assert counts.sum() == sum(len(w) + 1 for w in train)
    probs = bigram.fit(train)
    test_loss = bigram.loss(probs, test)
    assert test_loss < math.log(27) - 0.5
    # the unsmoothed fit is the maximum-likelihood one: no other table does better on train
    mle = bigram.fit(train, smoothing=0)
    assert bigram.loss(mle, train) < bigram.loss(probs, train)
