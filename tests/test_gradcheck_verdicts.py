"""The checker's verdicts: modes checked once, root causes, the values at fault, what
finite differences alone prove, and failures that become rows instead of escaping.

Tiny shapes and order=1 where second derivatives are not the point: each new function
compiles one program.
"""

import functools

import jax
import jax.numpy as jnp
import pytest
from test_gradcheck_check import BIAS, SCALE, X, ln_reference, make_layernorm

from jaxnet import gradcheck
from jaxnet import layers as L


def prelu(*, forget_x=False):
    """The README's PReLU, as a user writes it: no declaration of modes."""

    def init(key, input_shape, dtype=jnp.float32):
        return input_shape, {"a": jnp.full(input_shape[-1:], 0.25, dtype)}, {}

    def forward(params, state, x, *, train=False, key=None):
        return jnp.where(x > 0, x, params["a"] * x), x, state

    def backward(params, x, g):
        # dy/da = x where x <= 0, summed over the batch; forget_x plants the README's bug
        da = jnp.sum(jnp.where(x > 0, 0, g if forget_x else g * x), axis=0)
        return {"a": da}, jnp.where(x > 0, g, params["a"] * g)

    return L.Layer(init, forward, backward, "prelu")


def dense_with(bwd):
    @jax.custom_vjp
    def dense(x, w):
        return x @ w

    dense.defvjp(lambda x, w: (x @ w, (x, w)), bwd)
    return dense


W = jax.random.normal(jax.random.key(4), (4, 2))


def modes(report):
    return {row.check.split()[0] for row in report.rows}


# ------------------------------------------------------------------ (a) modes


def test_a_layer_without_modes_is_checked_once_and_a_declared_one_too():
    report = gradcheck.check_layer(prelu(), (3, 4), order=1, transforms=())
    assert report.passed and modes(report) == {"train=eval"}
    assert "checked once" in str(report)
    # dropout's modes differ; declared the same (say, rate 0), it is checked once as well
    declared = gradcheck.check_layer(L.dropout(0.0), (3, 4), order=1, transforms=(),
                                     same_modes=True)  # fmt: skip
    assert declared.passed and modes(declared) == {"train=eval"}


# ------------------------------------------------- (b) root causes, (c) the values


@functools.cache
def wrong_dx_report():
    # the variance term dropped from dx: one wrong leaf, which second order echoes
    return gradcheck.check(make_layernorm(var_term=False), ln_reference, X, SCALE, BIAS,
                           raise_on_failure=False)  # fmt: skip


def test_one_wrong_dx_is_one_cause_and_what_follows_from_it_is_not_run():
    report = wrong_dx_report()
    assert report.causes() == ["reference+finite_difference args[0]"]
    assert report.failing() == ["reference args[0]", "finite_difference args[0]"]
    not_run = [r for r in report.rows if r.verdict == "not run"]
    assert not_run and {r.check for r in not_run} <= {"rev_over_rev", "fwd_over_rev"}
    assert all("first order failed for args[0]" in r.note for r in not_run)
    assert report.summary().endswith(f"(1 cause, {len(not_run)} dependent rows not run)")


def test_a_wrong_layer_backward_is_one_cause_in_a_layer_checked_once():
    with pytest.raises(gradcheck.GradcheckError, match=r"\(1 cause\)") as e:
        gradcheck.check_layer(prelu(forget_x=True), (3, 4), order=1, transforms=())
    assert e.value.report.causes() == ["train=eval reference+finite_difference params['a']"]


def test_a_failing_row_shows_got_and_expected_at_its_worst_element():
    def bwd(res, g):  # dx off by 0.5 at one element
        x, w = res
        return (g @ w.T).at[2, 3].add(0.5), x.T @ g

    report = gradcheck.check(dense_with(bwd), lambda x, w: x @ w, X[:, :4], W, order=1,
                             raise_on_failure=False)  # fmt: skip
    (row,) = [r for r in report.rows if r.check == "reference" and r.verdict == "FAIL"]
    assert row.worst == (2, 3) and row.got - row.want == pytest.approx(0.5, rel=1e-5)
    line = next(line for line in str(report).splitlines() if line.startswith("reference "))
    assert f"got {row.got:.6g}, expected {row.want:.6g}" in line


# ---------------------------------------------------- (d) finite differences alone


def scaled_sin(factor):
    """sin with a hand backward cos(x) g * factor (an array: one element, or all)."""

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.cos(x) * g * factor,))
    return f


X64 = jax.random.normal(jax.random.key(3), (64, 64))


def check_alone(factor):
    return gradcheck.check(scaled_sin(factor), None, X64, order=1, raise_on_failure=False)


def test_without_a_reference_a_correct_vjp_passes_partially():
    report = check_alone(1.0)
    assert report.passed and report.partial and not report.weak
    (row,) = [r for r in report.rows if r.check == "finite_difference"]
    assert row.verdict == "partial" and "3 random directions" in row.note
    assert "passed, but partial" in str(report).splitlines()[0]


@pytest.mark.parametrize(
    "factor",
    [1.001, jnp.ones((64, 64)).at[5, 7].set(1.5)],
    ids=["everywhere_by_1.001", "one_element_of_4096_by_1.5"],
)
def test_without_a_reference_finite_differences_catch_a_small_wrong_scale(factor):
    report = check_alone(factor)
    assert report.failing() == ["finite_difference args[0]"]


def test_without_a_reference_an_error_below_what_it_can_see_is_partial_not_ok():
    # one element off by 1e-3 of itself: 1e-5 of the leaf's norm, below rtol 1e-4
    report = check_alone(jnp.ones((64, 64)).at[5, 7].set(1.001))
    assert report.passed and report.partial
    assert "partial" in report.summary() and "not each element" in report.summary()


# ------------------------------------------------------- (e) failures become rows


def _raises(res, g):
    raise ValueError("the backward cannot handle this")


def _one_cotangent_for_two_arguments(res, g):
    return (g @ res[1].T,)


def test_a_vjp_that_raises_or_returns_the_wrong_tree_is_a_failed_row():
    def check(bwd, **kwargs):
        return gradcheck.check(dense_with(bwd), lambda x, w: x @ w, X[:, :4], W, order=1,
                               **kwargs)  # fmt: skip

    (row,) = check(_one_cotangent_for_two_arguments, raise_on_failure=False).rows
    assert (row.check, row.verdict) == ("vjp", "FAIL") and "structure" in row.note
    with pytest.raises(gradcheck.GradcheckError, match="cannot handle this") as e:
        check(_raises)
    assert [(r.check, r.verdict) for r in e.value.report.rows] == [("vjp", "FAIL")]


def test_bad_check_layer_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="modes"):
        gradcheck.check_layer(prelu(), (3, 4), modes=())
    with pytest.raises(TypeError, match="must be a jaxnet.layers.Layer"):
        gradcheck.check_layer(None, (3, 4))


def test_an_empty_argument_has_nothing_to_check_and_says_so():
    x = jnp.zeros((0, 3))
    report = gradcheck.check(jnp.tanh, jnp.tanh, x, order=1)
    assert report.passed
    rows = [r for r in report.rows if r.leaf in ("args[0]", "out")]
    assert rows and all(r.verdict == "skipped" and "empty" in r.note for r in rows)
