"""jaxnet.testing: the assertion a researcher's test calls, and its hypothesis strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gradcheck_check import GOOD_LN, ln_reference, make_layernorm

from jaxnet import gradcheck, testing
from jaxnet import layers as L


# Every new shape compiles: few examples, and slow. At least 3 features: with 2, x_hat is +-1
# whatever x is, the true dx is about 0 and float32 leaves only rounding noise to compare
# (the correct GOOD_LN failed the reference check for 8 of 20 random inputs).
@pytest.mark.slow
@settings(deadline=None, max_examples=4)
@given(x=testing.arrays(testing.shapes(min_dims=2, max_dims=2, min_side=3, max_side=6)))
def test_hypothesis_over_layernorm_shapes(x):
    scale, bias = jnp.ones(x.shape[-1]), jnp.zeros(x.shape[-1]) + 0.5
    testing.assert_vjp_correct(GOOD_LN, ln_reference, x, scale + 0.1, bias, order=1)


def test_a_failure_is_short_then_the_table_and_hides_its_frames():
    x = jax.random.normal(jax.random.key(0), (4, 6))
    with pytest.raises(gradcheck.GradcheckError) as e:
        testing.assert_vjp_correct(make_layernorm(ddof=1), ln_reference, x, jnp.ones(6),
                                   jnp.zeros(6), order=1)  # fmt: skip
    first, *rest = str(e.value).splitlines()
    assert first.startswith("gradcheck failed: forward out, reference args[0]")
    assert rest[0].split()[:4] == ["check", "leaf", "shape", "verdict"]
    frames = [tb.tb_frame for tb in _tracebacks(e.value.__traceback__)]
    hidden = [fr.f_code.co_name for fr in frames if fr.f_locals.get("__tracebackhide__")]
    assert hidden == ["assert_vjp_correct", "_raise"]


def _tracebacks(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_strict_by_default_in_a_test():
    with pytest.raises(gradcheck.GradcheckError, match="weak"):
        testing.assert_vjp_correct(jax.nn.relu, jax.nn.relu, jnp.ones((3, 4)), order=1)
    report = testing.assert_vjp_correct(jax.nn.relu, jax.nn.relu, jnp.ones((3, 4)), order=1,
                                        strict=False)  # fmt: skip
    assert report.weak


@settings(deadline=None, max_examples=10)
@given(shape=testing.shapes(), dtype=testing.dtypes(), data=st.data())
def test_strategies_keep_values_away_from_zero(shape, dtype, data):
    with jax.enable_x64(dtype == "float64"):
        x = data.draw(testing.arrays(shape, dtype, away_from_zero=0.25))
    assert x.shape == shape and x.dtype == jnp.dtype(dtype)
    assert np.min(np.abs(np.asarray(x))) >= 0.25 - 1e-6 and min(shape) >= 2
    params = data.draw(testing.params(L.layer_norm().init, (3, 5)))
    assert np.all(np.asarray(params["bias"]) != 0)


def test_assert_layer_correct():
    report = testing.assert_layer_correct(L.layer_norm(), (3, 5), order=1, transforms=("vmap",))
    assert report.passed and not report.weak
