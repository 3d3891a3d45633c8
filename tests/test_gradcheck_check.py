"""gradcheck.check: every oracle, contract rule and transform catches a bug of its own.

The user's layers here (a layernorm, a dense layer, a relu) are written as a new user
would, each with a deliberately wrong variant that only the named check sees.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import gradcheck, ops
from jaxnet.lessons import reference

KEYS = jax.random.split(jax.random.key(0), 8)
X = jax.random.normal(KEYS[0], (4, 6))
SCALE = 1.0 + 0.3 * jax.random.normal(KEYS[1], (6,))
BIAS = 0.3 * jax.random.normal(KEYS[2], (6,))
W = jax.random.normal(KEYS[3], (6, 3))
B = 0.3 * jax.random.normal(KEYS[4], (3,))
EPS = 1e-5


# ---------------------------------------------------------------- the user's layernorm


def ln_reference(x, scale, bias, *, ddof=0, detach=False):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.sum(jnp.square(x - mu), -1, keepdims=True) / (x.shape[-1] - ddof)
    rstd = jax.lax.rsqrt(var + EPS)
    return (x - mu) * (jax.lax.stop_gradient(rstd) if detach else rstd) * scale + bias


def make_layernorm(*, ddof=0, var_term=True, residual_stop_gradient=False, detach=False):
    """A hand layernorm; the keywords plant the bugs."""

    @jax.custom_vjp
    def layernorm(x, scale, bias):
        return ln_reference(x, scale, bias, ddof=ddof)

    def layernorm_fwd(x, scale, bias):
        mu = jnp.mean(x, -1, keepdims=True)
        var = jnp.sum(jnp.square(x - mu), -1, keepdims=True) / (x.shape[-1] - ddof)
        rstd = jax.lax.rsqrt(var + EPS)
        if detach:
            rstd = jax.lax.stop_gradient(rstd)
        residuals = ((x - mu) * rstd, rstd, scale)
        if residual_stop_gradient:
            residuals = jax.lax.stop_gradient(residuals)
        return layernorm(x, scale, bias), residuals  # the forward rule calls the op itself

    def layernorm_bwd(residuals, g):
        # dx = rstd (dxhat - mean(dxhat) - xhat sum(dxhat xhat) / (n - ddof))
        xhat, rstd, scale = residuals
        dxhat = g * scale
        dx = dxhat - jnp.mean(dxhat, -1, keepdims=True)
        if var_term:
            n = xhat.shape[-1] - ddof
            dx = dx - xhat * jnp.sum(dxhat * xhat, -1, keepdims=True) / n
        return rstd * dx, jnp.sum(g * xhat, 0), jnp.sum(g, 0)

    layernorm.defvjp(layernorm_fwd, layernorm_bwd)
    return layernorm


GOOD_LN = make_layernorm()


def test_a_correct_layernorm_passes_every_check_and_prints_the_table():
    report = gradcheck.check(GOOD_LN, ln_reference, X, SCALE, BIAS, transforms=gradcheck.TRANSFORMS)
    assert report.passed and not report.weak
    checks = {row.check for row in report.rows}
    assert checks >= {"forward", "reference", "finite_difference", "rev_over_rev",
                      "fwd_over_rev", "structure", "zero_cotangent", "scaling", "additivity",
                      *gradcheck.TRANSFORMS}  # fmt: skip
    text = str(report)
    assert text.startswith("gradcheck passed") and "worst at" in text and "residuals: hand" in text
    assert report.residuals.hand_bytes > 0 and report.residuals.reference_bytes > 0


def failing(report):
    return report.failing_checks()


def check(f, ref, *args, **kwargs):
    return gradcheck.check(f, ref, *args, raise_on_failure=False, **kwargs)


def test_missing_one_over_n_minus_1_only_the_reference_sees():
    # forward and backward agree (unbiased variance in both): finite differences pass
    report = check(make_layernorm(ddof=1), ln_reference, X, SCALE, BIAS, order=1)
    assert {"forward", "reference"} <= failing(report)
    assert not failing(report) & {"finite_difference", "zero_cotangent", "scaling", "additivity"}


def test_a_backward_that_agrees_with_a_wrong_reference_only_finite_differences_see():
    # both treat the variance as a constant (PyTorch's .detach()); f's own forward does not
    hand = make_layernorm(var_term=False, detach=True)
    report = check(hand, functools.partial(ln_reference, detach=True), X, SCALE, BIAS)
    assert failing(report) == {"finite_difference"}
    assert "args[0]" in report.failing()[0]


def test_residuals_under_stop_gradient_only_second_order_sees():
    report = check(make_layernorm(residual_stop_gradient=True), ln_reference, X, SCALE, BIAS)
    assert failing(report) == {"rev_over_rev"}
    (skipped,) = [r for r in report.rows if r.check == "fwd_over_rev"]  # the fwd calls the op
    assert skipped.verdict == "skipped" and "forward mode through a custom_vjp" in skipped.note


def test_sum_of_layernorm_is_weak_and_strict_raises():
    # with a unit scale, sum(layernorm(x)) = sum(bias): its gradient in x is 0, so a
    # backward that drops the variance term passes
    def loss(layer):
        return lambda x, bias: jnp.sum(layer(x, jnp.ones(6), bias))

    hand, want = loss(make_layernorm(var_term=False)), loss(ln_reference)
    report = check(hand, want, X, BIAS, order=1)
    assert report.passed and report.weak
    weak = [r for r in report.rows if r.verdict == "weak"]
    assert {r.check for r in weak} >= {"reference"} and {r.leaf for r in weak} == {"args[0]"}
    with pytest.raises(gradcheck.GradcheckError, match="weak"):
        gradcheck.check(hand, want, X, BIAS, order=1, strict=True)


# ------------------------------------------------------------ the user's dense layer


def dense_reference(x, w, b):
    return x @ w + b


def make_dense(bwd):
    @jax.custom_vjp
    def dense(x, w, b):
        return x @ w + b

    dense.defvjp(lambda x, w, b: (dense(x, w, b), (x, w)), bwd)
    return dense


def _dense_bwd(res, g):
    x, w = res
    return g @ w.T, x.T @ g, jnp.sum(g, 0)


def _bias_over_every_axis(res, g):
    dx, dw, _ = _dense_bwd(res, g)
    return dx, dw, jnp.full((g.shape[-1],), jnp.sum(g))  # lesson 002's homework bug


def _weight_decay_inside(res, g):
    dx, dw, db = _dense_bwd(res, g)
    return dx, dw + 1e-7 * res[1], db  # far below every tolerance, but vjp(0) must be 0


def _clipped(res, g):
    return _dense_bwd(res, jnp.clip(g, -4.0, 4.0))  # gradient clipping inside the rule


def _one_element(res, g):
    dx, dw, db = _dense_bwd(res, g)
    return dx.at[2, 3].add(0.5), dw, db


def test_bias_summed_over_every_axis_is_named_with_its_worst_element():
    report = check(make_dense(_bias_over_every_axis), dense_reference, X, W, B, order=1)
    assert {"reference", "finite_difference"} <= failing(report)
    assert "reference args[2]" in report.failing() and "reference args[1]" not in report.failing()


def test_the_worst_element_is_reported_by_index():
    report = check(make_dense(_one_element), dense_reference, X, W, B, order=1)
    (row,) = [r for r in report.rows if r.check == "reference" and r.verdict == "FAIL"]
    assert (row.leaf, tuple(int(i) for i in row.worst)) == ("args[0]", (2, 3))
    assert "(2, 3)" in str(report)


def test_weight_decay_inside_the_backward_only_the_zero_cotangent_sees():
    report = check(make_dense(_weight_decay_inside), dense_reference, X, W, B, order=1)
    assert failing(report) == {"zero_cotangent"}
    assert report.failing() == ["zero_cotangent args[1]"]


def test_clipping_inside_the_backward_only_linearity_sees():
    report = check(make_dense(_clipped), dense_reference, X, W, B, order=1)
    assert "scaling" in failing(report)
    assert not failing(report) & {"reference", "finite_difference", "zero_cotangent"}


def test_a_cotangent_of_the_wrong_dtype_only_the_structure_sees():
    def bwd(res, g):  # accumulates in float32 and forgets to cast back to bfloat16
        return tuple(d.astype(jnp.float32) for d in _dense_bwd(res, g.astype(jnp.float32)))

    args = [a.astype(jnp.bfloat16) for a in (X, W, B)]
    report = check(make_dense(bwd), dense_reference, *args, order=1)
    assert failing(report) == {"structure"}
    assert "float32" in str(report) and "bfloat16" in str(report)


def test_an_eager_fast_path_only_jit_sees():
    def bwd(res, g):
        if isinstance(g, jax.core.Tracer):
            return _dense_bwd(res, g)
        x, w = (np.asarray(r) for r in res)  # eager: a numpy "fast path", bias over axis 1
        g = np.asarray(g)
        return g @ w.T, x.T @ g, np.sum(g, 1)[: g.shape[1]] if g.shape[0] >= 3 else None

    report = check(make_dense(bwd), dense_reference, X, W, B, order=1,
                   transforms=gradcheck.TRANSFORMS)  # fmt: skip
    assert failing(report) == {"jit"}


def test_a_wrong_batching_rule_only_the_vmap_checks_see():
    @jax.custom_batching.custom_vmap
    def bias_grad(g):
        return jnp.sum(g, 0)

    @bias_grad.def_vmap
    def _bias_grad_vmap(axis_size, in_batched, g):
        # wrong: sums over the examples of the batch too
        return jnp.broadcast_to(jnp.sum(g, (0, 1)), (axis_size, g.shape[-1])), True

    def bwd(res, g):
        dx, dw, _ = _dense_bwd(res, g)
        return dx, dw, bias_grad(g)

    report = check(make_dense(bwd), dense_reference, X, W, B, order=1,
                   transforms=gradcheck.TRANSFORMS)  # fmt: skip
    assert failing(report) == {"vmap", "vmap_of_grad", "grad_of_vmap"}


# --------------------------------------------------------------------------- relu


_STASH = {}


@jax.custom_vjp
def relu_stashing_its_mask(x):
    return jnp.where(x > 0, x, 0.0)


def _stash_fwd(x):
    _STASH["mask"] = x > 0  # a residual kept in a Python global instead of returned
    return relu_stashing_its_mask(x), None


relu_stashing_its_mask.defvjp(_stash_fwd, lambda _, g: (jnp.where(_STASH["mask"], g, 0.0),))


def test_a_residual_kept_outside_the_rule_only_scan_and_checkpoint_see():
    report = check(relu_stashing_its_mask, reference.relu, X, order=1,
                   transforms=("jit", "vmap", "scan", "checkpoint"))  # fmt: skip
    assert failing(report) == {"checkpoint", "scan"}
    assert "Tracer" in str(report)


def test_every_relu_on_one_side_is_weak():
    report = check(ops.relu, reference.relu, jnp.abs(X) + 0.1, order=1)
    assert report.passed and report.weak
    assert any("every input of gt(x, 0)" in note for note in report.notes)
    assert not check(ops.relu, reference.relu, X, order=1).weak


# -------------------------------------------------------- the cotangent contract


def test_integer_labels_get_float0_and_none_inside_pytrees_is_fine():
    labels = jnp.array([0, 2, 1, 2])

    def loss(params, x, labels):
        return ops.softmax_cross_entropy(ops.linear(x, params["w"], params["b"]), labels)

    def loss_reference(params, x, labels):
        return reference.softmax_cross_entropy(x @ params["w"] + params["b"], labels)

    params = {"w": W, "b": B, "unused": None}
    report = gradcheck.check(loss, loss_reference, params, X, labels, order=1)
    assert report.passed
    leaves = {r.leaf for r in report.rows if r.check == "reference"}
    assert leaves == {"args[0]['b']", "args[0]['w']", "args[1]"}  # labels: float0, no row


def test_a_correct_float32_gelu_passes_and_float64_checks_tightly():
    @jax.custom_vjp
    def gelu(x):
        return jax.nn.gelu(x, approximate=False)

    def gelu_bwd(x, g):
        # d/dx x Phi(x) = Phi(x) + x phi(x)
        cdf = 0.5 * (1 + jax.lax.erf(x / np.sqrt(2)))
        return (g * (cdf + x * jnp.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)),)

    gelu.defvjp(lambda x: (gelu(x), x), gelu_bwd)
    reference_gelu = functools.partial(jax.nn.gelu, approximate=False)
    assert gradcheck.check(gelu, reference_gelu, 3 * X, order=1).passed
    with jax.enable_x64(True):
        report = gradcheck.check(gelu, reference_gelu, 3 * X.astype(jnp.float64), order=1)
    assert {r.rtol for r in report.rows if r.check == "reference"} == {1e-9}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_layernorm_passes_with_its_dtype_tolerance(dtype):
    args = [a.astype(dtype) for a in (X, SCALE, BIAS)]
    report = gradcheck.check(GOOD_LN, ln_reference, *args, order=1)
    assert {r.rtol for r in report.rows if r.check == "reference"} == {
        gradcheck.tolerances.for_dtype(dtype).rtol
    }
    assert check(make_layernorm(var_term=False), ln_reference, *args, order=1).failing_checks()


def test_a_backward_that_cannot_trace_fails_jit_and_runs_the_rest_eagerly():
    def bwd(res, g):
        g = jnp.asarray(np.asarray(g))  # host numpy: runs eagerly, cannot trace
        return _dense_bwd(res, g)

    report = check(make_dense(bwd), dense_reference, X, W, B, order=1, transforms=("jit",),
                   finite_differences=False)  # fmt: skip
    rows = {r.check: r for r in report.rows}
    assert rows["jit"].verdict == "FAIL" and "does not trace" in rows["jit"].note
    assert failing(report) == {"jit"}  # every other check ran eagerly, and passed


def test_a_closed_over_float32_target_runs_finite_differences_in_float32():
    y = jax.random.normal(KEYS[5], (4, 3))
    report = gradcheck.check(lambda w: ops.mse(X @ w, y), lambda w: reference.mse(X @ w, y), W,
                             order=1)  # fmt: skip
    (row,) = [r for r in report.rows if r.check == "finite_difference"]
    assert row.verdict == "ok" and "refused float64" in row.note and row.rtol == 2e-2


def test_without_a_reference_finite_differences_judge_alone():
    report = check(make_dense(_bias_over_every_axis), None, X, W, B)
    assert failing(report) == {"finite_difference"} and report.residuals is None
    assert {r.verdict for r in report.rows if r.check in ("rev_over_rev", "fwd_over_rev")} == {
        "skipped"
    }


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        gradcheck.check(GOOD_LN, ln_reference, X, SCALE, BIAS, order=3)
    with pytest.raises(ValueError, match="unknown transforms"):
        gradcheck.check(GOOD_LN, ln_reference, X, SCALE, BIAS, transforms=("pmap",))
    with pytest.raises(ValueError, match="no floating argument"):
        gradcheck.check(lambda i: i, lambda i: i, jnp.arange(3))
