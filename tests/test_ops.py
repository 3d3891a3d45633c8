"""Every op's hand VJP against jax.grad of the plain reference, under jax.jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TOLERANCES, assert_trees_close
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxnet import gradcheck, ops
from jaxnet.lessons import reference

KEY = jax.random.key(0)


def _vjp(f, args, cotangent_seed=7):
    """Cotangents of every argument of f for a fixed random output cotangent."""
    out, vjp_fn = jax.vjp(f, *args)
    return vjp_fn(jax.random.normal(jax.random.key(cotangent_seed), out.shape, out.dtype))


def _cases(batch, fan_in, fan_out, classes, dtype):
    # numpy draws: eager jax.random would compile anew for every hypothesis shape.
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape), dtype)

    x, w, b = normal(batch, fan_in), normal(fan_in, fan_out), normal(fan_out)
    pred, target = normal(batch, fan_out), normal(batch, fan_out)
    logits = 3 * normal(batch, classes)
    labels = jnp.asarray(rng.integers(0, classes, batch), jnp.int32)
    return {
        "linear": (x, w, b),
        "linear_nobias": (x, w),
        "relu": (x,),
        "mse": (pred, target),
        "mse_squeeze": (pred[:, :1], target[:, 0]),
        "sum_squares": (pred, target),
        "log_softmax": (logits,),
        "softmax_cross_entropy": (logits, labels),
    }


PAIRS = {
    "linear": (ops.linear, reference.linear),
    "linear_nobias": (ops.linear, reference.linear),
    "relu": (ops.relu, reference.relu),
    "mse": (ops.mse, reference.mse),
    "mse_squeeze": (ops.mse, reference.mse),
    "sum_squares": (ops.sum_squares, reference.sum_squares),
    "log_softmax": (ops.log_softmax, reference.log_softmax),
    "softmax_cross_entropy": (ops.softmax_cross_entropy, reference.softmax_cross_entropy),
}


def _float_args(name, args):
    """Differentiate the float arguments only (labels are fixed)."""
    return args[:1] if name == "softmax_cross_entropy" else args


def _got_and_want(name, args):
    """(hand VJP, reference VJP) of the named op's float arguments."""
    mine, ref = PAIRS[name]
    n = len(_float_args(name, args))
    rest = args[n:]
    return (
        _vjp(lambda *a: mine(*a, *rest), args[:n]),
        _vjp(lambda *a: ref(*a, *rest), args[:n]),
    )


def _check(name, args, dtype):
    got, want = jax.jit(_got_and_want, static_argnums=0)(name, args)
    assert_trees_close(got, want, **TOLERANCES[dtype], err_msg=name)
    assert jax.jit(PAIRS[name][0])(*args).dtype == jnp.dtype(dtype)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_op_matches_reference(name, dtype):
    _check(name, _cases(5, 7, 3, 4, dtype)[name], dtype)


@pytest.mark.slow  # a hypothesis sweep: every new shape compiles
@settings(max_examples=8, deadline=None)
@given(
    batch=st.integers(1, 9),
    fan_in=st.integers(1, 12),
    fan_out=st.integers(1, 6),
    classes=st.integers(2, 6),
)
def test_ops_any_size(batch, fan_in, fan_out, classes):
    with jax.enable_x64(True):
        cases = _cases(batch, fan_in, fan_out, classes, "float64")
        both = jax.jit(lambda c: {name: _got_and_want(name, c[name]) for name in PAIRS})(cases)
        for got, want in both.values():
            gradcheck.assert_close(got, want, **TOLERANCES["float64"])


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_op_finite_differences(name):
    args = _cases(4, 5, 3, 4, "float32")[name]
    if name == "relu":  # keep clear of the kink, where finite differences mean nothing
        args = (args[0] + jnp.sign(args[0]) * 0.1,)
    gradcheck.assert_vjp(PAIRS[name][0], *args)


def test_relu_gradient_at_exactly_zero_is_zero():
    x = jnp.array([-1.0, 0.0, 2.0])
    g = jax.grad(lambda x: jnp.sum(ops.relu(x)))(x)
    assert g.tolist() == [0.0, 0.0, 1.0]
    assert g.tolist() == jax.grad(lambda x: jnp.sum(jax.nn.relu(x)))(x).tolist()
    assert g.tolist() == jax.grad(lambda x: jnp.sum(reference.relu(x)))(x).tolist()


def test_relu_residual_is_a_boolean_mask():
    _, mask = ops._relu_fwd(jnp.ones((3, 4)))
    assert mask.dtype == jnp.bool_


def test_cross_entropy_is_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0]])
    loss = ops.softmax_cross_entropy(logits, jnp.array([0]))
    grad = jax.grad(ops.softmax_cross_entropy)(logits, jnp.array([1]))
    assert jnp.isfinite(loss) and float(loss) == 0.0
    assert jnp.all(jnp.isfinite(grad))


def test_cross_entropy_labels_get_no_cotangent():
    logits, labels = jnp.ones((2, 3)), jnp.array([0, 2])
    _, (_, dlabels) = jax.value_and_grad(ops.softmax_cross_entropy, argnums=(0, 1), allow_int=True)(
        logits, labels
    )
    assert dlabels.dtype == jax.dtypes.float0


@pytest.mark.parametrize("smoothing", [0.1, 0.6])
def test_label_smoothing_matches_reference_and_optax(smoothing):
    with jax.enable_x64(True):
        logits = jax.random.normal(KEY, (6, 5), jnp.float64)
        labels = jnp.array([0, 4, 2, 2, 1, 3])
        target = optax.smooth_labels(jax.nn.one_hot(labels, 5, dtype=jnp.float64), smoothing)
        want = optax.softmax_cross_entropy(logits, target).mean()
        for f in (ops.softmax_cross_entropy, reference.softmax_cross_entropy):
            got = jax.jit(jax.value_and_grad(functools.partial(f, label_smoothing=smoothing)))
            value, grad = got(logits, labels)
            np.testing.assert_allclose(value, want, rtol=1e-12)
            # dz = (softmax - target) / n
            np.testing.assert_allclose(grad, (jax.nn.softmax(logits) - target) / 6, atol=1e-12)


def test_label_smoothing_keeps_out_of_range_labels_nan():
    logits = jnp.ones((2, 3))
    f = functools.partial(ops.softmax_cross_entropy, label_smoothing=0.1)
    loss, grad = jax.jit(jax.value_and_grad(f))(logits, jnp.array([0, 3]))
    assert jnp.isnan(loss) and jnp.all(jnp.isnan(grad[1])) and not jnp.any(jnp.isnan(grad[0]))


def test_out_of_range_labels_under_jit_give_nan():
    logits = jnp.ones((2, 3))
    loss, grad = jax.jit(jax.value_and_grad(ops.softmax_cross_entropy))(logits, jnp.array([0, 3]))
    assert jnp.isnan(loss) and jnp.all(jnp.isnan(grad[1])) and not jnp.any(jnp.isnan(grad[0]))


def test_forward_mode_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(ops.relu, (jnp.ones(3),), (jnp.ones(3),))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"linear: x of shape \(2, 3\) does not fit w"):
        ops.linear(jnp.ones((2, 3)), jnp.ones((4, 5)))
    with pytest.raises(ValueError, match=r"linear: b has shape \(4,\); expected \(5,\)"):
        ops.linear(jnp.ones((2, 4)), jnp.ones((4, 5)), jnp.ones(4))
    with pytest.raises(ValueError, match="Shapes are never broadcast"):
        ops.mse(jnp.ones((4, 1)), jnp.ones((1, 4)))
    with pytest.raises(TypeError, match="expected float32"):
        ops.mse(jnp.ones(4), jnp.ones(4, jnp.int32))
    with pytest.raises(TypeError, match="expected integer class"):
        ops.softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[3, -1\]"):
        ops.softmax_cross_entropy(jnp.ones((3, 3)), jnp.array([0, 3, -1]))


def test_partial_squeeze_only_for_trailing_one():
    with pytest.raises(ValueError, match="prediction has shape"):
        functools.partial(ops.sum_squares)(jnp.ones((4, 2)), jnp.ones(4))
