"""jaxnet.stats: moments that survive huge activations, and a verdict a learner can trust."""

import jax
import numpy as np
import pytest

from jaxnet import initializers, stats


@pytest.mark.parametrize(
    "stds, verdict, layer",
    [
        ([1.0, 0.5, 0.12], "holds", None),
        ([1.0, 0.05, 3.0], "holds", None),  # the final std decides; the dip is not a verdict
        ([1.0, 20.0, 2.8e7], "explodes", 2),  # the "ok" at 2.8e7
        ([1.0, 0.3, 1e-12], "vanishes", 3),  # and at 1e-12
        ([1.0, 1e30, np.inf, np.nan], "overflows", 3),
        ([1.0, 1e-30, 1e-45, 0.0, 0.0], "underflows", 4),
        ([10.0, 0.1], "holds", None),  # both bounds are inside
        ([10.001], "explodes", 1),
    ],
)
def test_verdict_names_what_happened_and_where(stds, verdict, layer):
    got = stats.verdict(stds)
    assert (got.verdict, got.layer) == (verdict, layer)
    assert got.verdict in stats.VERDICTS


def test_verdict_refuses_an_empty_chain():
    with pytest.raises(ValueError, match="empty"):
        stats.verdict([])


def _chain(init, relu, depth=60, width=100):
    x = jax.random.normal(jax.random.key(0), (8, width))
    return stats.chain_stds(
        x, stats.chain_weights(jax.random.key(1), init, depth, width), relu=relu
    )


def test_chain_detects_overflow_hidden_by_relu():
    # XLA's max(nan, 0) is 0: without the overflow flag this chain would read "underflows".
    got = stats.verdict(_chain(initializers.normal, relu=True)[1])
    assert got.verdict == "overflows" and 30 < got.layer < 60


def test_tiny_weights_underflow_to_exact_zero_at_a_named_layer():
    # float32 holds nothing below about 1e-45: scale 1e-6 per layer reaches it in ~7 layers.
    got = stats.verdict(_chain(stats.fixed_scale(1e-6), relu=True, depth=12)[1])
    assert got.verdict == "underflows" and 4 <= got.layer <= 12 and got.final_std == 0


def test_safe_moments_past_float32_squares():
    # jnp.std squares 1e30 to inf; safe_moments scales first.
    h = np.array([1e30, -1e30, 3e30, -3e30], np.float32)
    mean, std = stats.safe_moments(h)
    np.testing.assert_allclose([mean, std], [0.0, np.std(h.astype(np.float64))], rtol=1e-5, atol=1)
