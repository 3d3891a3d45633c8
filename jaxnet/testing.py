"""For a researcher's own tests: one assertion per hand VJP, and hypothesis strategies.

    from hypothesis import given, settings
    from jaxnet import testing

    @settings(deadline=None, max_examples=20)  # every new shape compiles once
    @given(x=testing.arrays(testing.shapes(min_dims=2)))
    def test_my_layernorm(x):
        testing.assert_vjp_correct(my_layernorm, plain_layernorm, x)

Needs hypothesis (`pip install jaxnet-handvjp[test]`); the library itself does not.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from jaxnet import gradcheck
from jaxnet.gradcheck import _layer as layer_check
from jaxnet.typing import PyTree

FLOAT_DTYPES = ("float32", "float64")  # float64 needs jax.enable_x64 around the test


def _raise(report: gradcheck.Report, strict: bool) -> gradcheck.Report:
    __tracebackhide__ = True
    if not report.passed or (strict and report.weak):
        raise gradcheck.GradcheckError(report)
    return report


def assert_vjp_correct(
    f: Callable[..., PyTree], reference: Callable[..., PyTree] | None, *args: PyTree, **kwargs
) -> gradcheck.Report:
    """`gradcheck.check`, raising a `GradcheckError` whose message is the verdict and table.

    pytest shows that message, not this frame (`__tracebackhide__`). `strict` defaults to
    True here: in a test, a check that could not fail is a failure.
    """
    __tracebackhide__ = True
    strict = kwargs.pop("strict", True)
    report = gradcheck.check(f, reference, *args, raise_on_failure=False, **kwargs)
    return _raise(report, strict)


def assert_layer_correct(layer, input_shape: Sequence[int], **kwargs) -> gradcheck.Report:
    """`gradcheck.check_layer` as an assertion, strict by default (see assert_vjp_correct)."""
    __tracebackhide__ = True
    strict = kwargs.pop("strict", True)
    report = gradcheck.check_layer(layer, input_shape, raise_on_failure=False, **kwargs)
    return _raise(report, strict)


def shapes(*, min_dims: int = 1, max_dims: int = 3, min_side: int = 2, max_side: int = 8):
    """Array shapes; sides of at least 2 by default (a side of 1 hides broadcasting bugs)."""
    side = st.integers(min_side, max_side)
    return st.integers(min_dims, max_dims).flatmap(lambda n: st.tuples(*[side] * n))


def dtypes(names: Sequence[str] = FLOAT_DTYPES):
    """Floating dtype names, for `arrays` (float64 needs `jax.enable_x64(True)`)."""
    return st.sampled_from(tuple(names))


@st.composite
def arrays(draw, shape, dtype="float32", *, away_from_zero: float = 0.1, scale: float = 1.0):
    """jax arrays of `shape` (a tuple or a strategy), every element at least `away_from_zero`
    from 0 (a zero hides a wrong mask or a dropped term) and about `scale` in size.

    Hypothesis draws a seed rather than every element: it shrinks the shape, not the values.
    """
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else tuple(shape)
    dtype = draw(dtype) if isinstance(dtype, st.SearchStrategy) else dtype
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    magnitude = away_from_zero + np.abs(rng.standard_normal(shape))
    return jnp.asarray(scale * np.sign(rng.standard_normal(shape)) * magnitude, dtype)


@st.composite
def params(draw, init: Callable, input_shape, dtype="float32", *, scale: float = 0.1):
    """A layer's params from `init(key, input_shape, dtype)`, each leaf moved by scale N(0, 1)
    away from its init (a zero bias or a unit scale can hide a wrong backward)."""
    key = jax.random.key(draw(st.integers(0, 2**31 - 1)))
    init_key, move_key = jax.random.split(key)
    _, p, _ = init(init_key, tuple(input_shape), dtype)
    return layer_check.away_from_zero(move_key, p, scale)
