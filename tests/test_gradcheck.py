"""The checker can fail: deliberately wrong backwards are caught, and the leaf is named."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TOLERANCES, make_problem

from jaxnet import gradcheck, ops
from jaxnet.lessons import reference


@jax.custom_vjp
def relu_wrong_sign(x):
    return jnp.where(x > 0, x, 0.0)


relu_wrong_sign.defvjp(
    lambda x: (relu_wrong_sign(x), x < 0),  # the mask with the wrong sign
    lambda mask, g: (jnp.where(mask, g, 0.0),),
)


@jax.custom_vjp
def affine_bias_summed_over_all(x, w, b):
    return x @ w + b


def _bias_bug_bwd(res, g):
    x, w = res
    dx, dw, db = ops.linear_backward(x, w, g)
    # lesson 002's homework: b -= lr * grad.sum() sums over every element, not the batch
    return dx, dw, jnp.full_like(db, jnp.sum(g))


affine_bias_summed_over_all.defvjp(lambda x, w, b: (x @ w + b, (x, w)), _bias_bug_bwd)


def _net(relu, affine, params, x, y):
    h = relu(affine(x, params[0]["w"], params[0]["b"]))
    return reference.mse(affine(h, params[1]["w"], params[1]["b"]), y)


GOOD = functools.partial(_net, ops.relu, ops._affine)
WRONG_RELU = functools.partial(_net, relu_wrong_sign, ops._affine)
WRONG_BIAS = functools.partial(_net, ops.relu, affine_bias_summed_over_all)


@pytest.fixture
def problem():
    return make_problem([4, 6, 3], 5, "mse", "float32")


def test_good_backward_passes(problem):
    report = gradcheck.assert_close(
        jax.grad(GOOD)(*problem), jax.grad(reference.mlp_loss)(*problem)
    )
    assert report.ok and len(report.leaves) == 4
    assert gradcheck.assert_vjp(GOOD, *problem).ok


def test_wrong_relu_mask_is_caught_and_named(problem):
    want = jax.grad(reference.mlp_loss)(*problem)
    with pytest.raises(gradcheck.GradientMismatchError, match=r"\[0\]\['w'\]") as e:
        gradcheck.assert_close(jax.grad(WRONG_RELU)(*problem), want, **TOLERANCES["float32"])
    assert "[0]['b']" in str(e.value) and "max rel err" in str(e.value)
    assert isinstance(e.value, gradcheck.GradcheckError)  # one error type for every check
    assert "[1]['w']" not in e.value.report.failing()  # the layer above is right


def test_bias_summed_over_wrong_axis_is_caught_and_named(problem):
    report = gradcheck.compare(
        jax.grad(WRONG_BIAS)(*problem), jax.grad(reference.mlp_loss)(*problem)
    )
    assert not report.ok
    assert report.failing() == ["[0]['b']", "[1]['b']"]
    assert "[0]['b']" in str(report)


def test_finite_differences_catch_wrong_backward_and_name_the_leaf(problem):
    report = gradcheck.check_vjp(WRONG_RELU, *problem)
    assert not report.ok and "args[0][0]['w']" in report.failing()
    with pytest.raises(gradcheck.GradientMismatchError, match=r"args\[0\]\[0\]\['b'\]"):
        gradcheck.assert_vjp(WRONG_BIAS, *problem)


def test_check_vjp_restores_x64_and_dtypes(problem):
    assert not jax.config.jax_enable_x64
    gradcheck.check_vjp(GOOD, *problem)
    assert not jax.config.jax_enable_x64
    assert problem[1].dtype == jnp.float32


def test_compare_refuses_different_structures():
    with pytest.raises(ValueError, match="differ in structure"):
        gradcheck.compare({"w": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match="has shape"):
        gradcheck.compare({"w": jnp.ones(2)}, {"w": jnp.ones(3)})


def test_report_table_columns():
    report = gradcheck.compare({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, 2.5])})
    assert isinstance(report, gradcheck.Report)  # compare's table is the checker's
    header = str(report).splitlines()[1].split()
    assert header[:4] == ["check", "leaf", "shape", "verdict"]
    (leaf,) = report.leaves
    assert isinstance(leaf, gradcheck.LeafComparison) and leaf.path == "['w']"
    assert (leaf.exact, leaf.allclose, leaf.max_abs, leaf.max_rel) == (False, False, 0.5, 0.2)
    assert (leaf.got, leaf.want, leaf.worst) == (2.0, 2.5, (1,))


def test_check_vjp_lines_up_none_arguments():
    # a None argument (or a None inside a dict) used to shift the rows: a correct VJP failed
    x, w = (
        jax.random.normal(jax.random.key(0), (3, 4)),
        jax.random.normal(jax.random.key(1), (4, 2)),
    )
    report = gradcheck.assert_vjp(lambda x, b, w: ops.linear(x, w, b), x, None, w)
    assert [leaf.path for leaf in report.leaves] == ["args[0]", "args[2]"]
    report = gradcheck.assert_vjp(
        lambda p: ops.linear(p["x"], p["w"], p["b"]), {"x": x, "b": None, "w": w}
    )
    assert [leaf.path for leaf in report.leaves] == ["args[0]['w']", "args[0]['x']"]


def test_check_vjp_with_a_closed_over_float32_target():
    # f refuses float64 arguments against its float32 target: the check runs in float32
    x, y = (
        jax.random.normal(jax.random.key(0), (3, 4)),
        jax.random.normal(jax.random.key(2), (3, 2)),
    )
    report = gradcheck.assert_vjp(lambda w: ops.mse(x @ w, y), jnp.ones((4, 2)))
    (row,) = report.leaves
    assert "in float32, as f refused float64" in row.note
    assert row.rtol == gradcheck.tolerances.for_dtype("float32").native_fd_rtol
    with pytest.raises(gradcheck.GradientMismatchError):  # and still catches a wrong mask
        gradcheck.assert_vjp(lambda w: ops.mse(relu_wrong_sign(x @ w), y), jnp.ones((4, 2)))


def test_large_gradients_are_judged_by_their_scale_and_a_wrong_one_still_fails():
    # experiments/custom_function on another CPU: MyReLU's gradients reach ~5e4, and another
    # summation order moved an element near 0 by 5.9e-3 (max rel diff 1.1e-7): a fixed
    # atol=1e-3 failed a correct gradient. Every atol now scales with the leaf's magnitude.
    want = (5e4 * np.random.default_rng(0).standard_normal((64, 100))).astype(np.float32)
    want[0, 0] = 1e-3
    got = want.copy()
    got[0, 0] += 5.9e-3
    assert gradcheck.compare({"w": got}, {"w": want}).ok  # the dtype's tolerance, scaled
    assert gradcheck.compare({"w": got}, {"w": want}, rtol=1e-5, atol=1e-3).ok
    big = np.unravel_index(np.argmax(np.abs(want)), want.shape)
    wrong = want.copy()
    wrong[big] *= 1.001
    report = gradcheck.compare({"w": wrong}, {"w": want})
    assert report.failing() == ["['w']"] and report.leaves[0].worst == big
