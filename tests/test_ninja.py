"""Makemore part 4: every hand gradient equals jax.grad of the same intermediate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TOLERANCES, assert_trees_close

from jaxnet import gradcheck
from jaxnet.lessons import names, ninja


def _problem(dtype, n=32, seed=0):
    words = names.split(names.load("first"))[0]
    pairs = names.windows(words, block_size=3)
    rows = np.random.default_rng(seed).choice(len(pairs.y), n, replace=False)
    params = ninja.init_params(
        jax.random.key(seed), vocab=27, block_size=3, embedding_dim=5, hidden=16, dtype=dtype
    )
    return params, jnp.asarray(pairs.x[rows]), jnp.asarray(pairs.y[rows])


# The lecture's Bessel variant in float64 only: each case compiles three programs.
@pytest.mark.parametrize(
    "dtype,bessel", [("float32", False), ("float64", False), ("float64", True)]
)
def test_every_step_of_the_backward_equals_autodiff(dtype, bessel):
    with jax.enable_x64(dtype == "float64"):
        params, x, y = _problem(dtype)
        _, v = ninja.forward(params, x, y, bessel=bessel)
        got = ninja.backward(params, v, x, y, bessel=bessel)
        want = ninja.autodiff(params, x, y, bessel=bessel)
    assert set(got) == set(want) == set(ninja.ORDER)
    assert set(v) == set(ninja.INTERMEDIATES)
    assert all(g.dtype == dtype for g in got.values())
    assert_trees_close(got, want, **TOLERANCES[dtype])


def test_the_fused_one_liners_equal_the_step_by_step_chain(dtype):
    params, x, y = _problem(dtype)
    loss, v = ninja.forward(params, x, y)
    d = ninja.backward(params, v, x, y)
    tol = TOLERANCES[dtype]
    np.testing.assert_allclose(ninja.cross_entropy_backward(v["logits"], y), d["logits"], **tol)
    dhprebn = ninja.batch_norm_backward(params["bngain"], v["bnvar_inv"], v["bnraw"], d["hpreact"])
    np.testing.assert_allclose(dhprebn, d["hprebn"], **tol)
    fused_loss, grads = ninja.fused_grads(params, x, y)
    gradcheck.assert_close(grads, {k: d[k] for k in ninja.PARAMS}, **tol)
    assert fused_loss == pytest.approx(float(loss), rel=1e-6)


def test_the_biased_backward_is_caught_against_the_lectures_bessel_forward():
    # The one deliberate mismatch: the first gradient that differs is dbndiff2 (1/n vs 1/(n-1)),
    # and everything computed from it after.
    with jax.enable_x64(True):  # the shapes and dtypes of the float64 cases: compiled once
        params, x, y = _problem("float64")
        _, v = ninja.forward(params, x, y, bessel=True)
        got = ninja.backward(params, v, x, y, bessel=False)
        want = ninja.autodiff(params, x, y, bessel=True)
        one_liner = ninja.batch_norm_backward(
            params["bngain"], v["bnvar_inv"], v["bnraw"], got["hpreact"], bessel=False
        )
    report = gradcheck.compare(got, want, **TOLERANCES["float64"])
    failing = {path.strip("[']") for path in report.failing()}
    assert [name for name in ninja.ORDER if name in failing][0] == "bndiff2"
    assert {"hprebn", "W1", "C"} <= failing and "bngain" not in failing
    assert not np.allclose(one_liner, want["hprebn"], rtol=1e-6)


def test_cmp_rows_say_exact_approximate_and_max_diff():
    a = np.array([1.0, 2.0], np.float32)
    assert ninja.cmp("a", a, a) == ninja.Row("a", True, True, 0.0)
    row = ninja.cmp("b", a, a + np.float32(1e-7))
    assert not row.exact and row.approximate and 0 < row.max_diff < 1e-6
    assert not ninja.cmp("c", a, a + 1).approximate
    assert "maxdiff: 1" in ninja.table([ninja.cmp("c", a, a + 1)])
    with pytest.raises(ValueError, match="shape"):
        ninja.cmp("d", a, a[:1])


def test_the_fused_gradient_matches_finite_differences():
    """Central differences of the loss along a random direction, in float64; the same check
    fails for a gradient with one leaf wrong."""
    with jax.enable_x64(True):
        params, x, y = _problem("float64")
        _, grads = ninja.fused_grads(params, x, y)
        keys = dict(zip(ninja.PARAMS, jax.random.split(jax.random.key(7), len(ninja.PARAMS))))
        direction = {k: jax.random.normal(keys[k], p.shape, p.dtype) for k, p in params.items()}

        def along(t):
            moved = {k: p + t * direction[k] for k, p in params.items()}
            return float(ninja.forward(moved, x, y)[0])

        eps = 1e-5
        numeric = (along(eps) - along(-eps)) / (2 * eps)

    def slope(g):
        return sum(float(np.vdot(g[k], direction[k])) for k in ninja.PARAMS)

    assert slope(grads) == pytest.approx(numeric, rel=1e-6)
    wrong = {**grads, "bnbias": -grads["bnbias"]}
    assert slope(wrong) != pytest.approx(numeric, rel=1e-3)
