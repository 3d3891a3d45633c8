"""jaxnet.lessons.stats: moments that survive huge activations; a verdict a learner can trust."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close

from jaxnet import initializers, network
from jaxnet import layers as L
from jaxnet.lessons import stats


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
    # atol scaled to the values (float32 rounding of 3e30 is about 2e23), not a bare 1.
    np.testing.assert_allclose([mean, std], [0.0, np.std(h.astype(np.float64))], rtol=1e-5,
                               atol=1e-6 * float(np.abs(h).max()))  # fmt: skip


def test_first_out_of_band_gives_the_step_and_the_layer():
    stds = np.array([[1.0, 1.0], [1.0, 9.0], [0.5, 11.0], [np.nan, 1.0]])
    assert stats.first_out_of_band(stds) == (2, 2)
    assert stats.first_out_of_band(stds[:2]) == (None, None)
    assert stats.first_out_of_band([[1.0, np.nan]]) == (0, 2)


# ------------------------------------------------------------------------------ probe


def test_probe_records_moments_near_zero_and_the_histogram_of_abs():
    x = jnp.array([[-3.0, -0.2, 0.0, 0.3], [0.6, 1.0, 12.0, 2.5]])
    layer = stats.probe(bins=4, max_abs=4.0, near_zero=0.5)
    _, _, state = layer.init(jax.random.key(0), x.shape)
    out, _, new = layer.forward({}, state, x, train=True, key=None)
    assert out is x
    np.testing.assert_allclose(new["mean"], np.mean(x), rtol=1e-6)
    np.testing.assert_allclose(new["std"], np.std(x), rtol=1e-6)
    assert float(new["near_zero"]) == 3 / 8  # -0.2, 0.0, 0.3
    # |x| in [0, 1), [1, 2), [2, 3), [3, 4]: 12 falls outside, as torch.histc drops it
    np.testing.assert_array_equal(new["hist"], [4, 1, 1, 1])
    assert jax.tree_util.tree_map(jnp.shape, new) == jax.tree_util.tree_map(jnp.shape, state)
    with pytest.raises(ValueError, match="bins"):
        stats.probe(bins=0)


def test_probe_state_is_the_same_in_every_grad_mode_inside_a_jitted_scan():
    net = L.serial(L.dense(16), L.relu(), stats.probe(), L.dense(3))
    _, params, state = net.init(jax.random.key(0), (8, 5))
    xs = jax.random.normal(jax.random.key(1), (4, 8, 5))
    ys = jax.random.randint(jax.random.key(2), (4, 8), 0, 3)

    def run(grad):
        def step(s, batch):
            def loss(p):
                return network.network_loss(net, p, s, *batch, loss="cross_entropy", grad=grad)

            (_, s), g = jax.value_and_grad(loss, has_aux=True)(params)
            return s, (s[2], g)

        return jax.jit(lambda s: jax.lax.scan(step, s, (xs, ys))[1])(state)

    (want_stats, want_grads) = run("autodiff")
    assert float(jnp.min(want_stats["std"])) > 0 and want_stats["hist"].shape == (4, 40)
    for grad in ("fused", "ops"):
        got_stats, got_grads = run(grad)
        assert_trees_close((got_stats, got_grads), (want_stats, want_grads), rtol=1e-5,
                           atol=1e-6, err_msg=grad)  # fmt: skip
