"""Ops with hand-derived VJPs, each registered with `jax.custom_vjp`.

Every op is three definitions side by side: the forward, `_op_fwd` (the forward plus the
smallest residual the backward needs) and `_op_bwd` (the derivation, as a comment). The
backward math sits in `*_backward` helpers; `jaxnet.layers.dense` uses `linear_backward`,
and the losses' rules live in `jaxnet.losses`. Whole networks are `jaxnet.layers`.

Forward-mode autodiff applied to an op (`jax.jvp`, `jax.jacfwd`) cannot pass through a
`custom_vjp`: JAX raises "can't apply forward-mode autodiff (jvp) to a custom_vjp
function." Reverse mode works (`jax.grad`, `jax.vjp`, `jax.jacrev`), and so do
reverse-over-reverse and forward-over-reverse (`jax.hessian`).
"""

import jax
import jax.numpy as jnp

from jaxnet import _checks, losses
from jaxnet.typing import Array, ArrayLike

# ----------------------------------------------------------------------------- linear


def linear_backward(x: Array, w: Array, g: Array) -> tuple[Array, Array, Array]:
    """Cotangents (dx, dw, db) of y = x @ w + b for the output cotangent g."""
    # y_bj = sum_i x_bi w_ij + b_j, so
    #   dx_bi = sum_j g_bj w_ij  -> g @ w.T
    #   dw_ij = sum_b x_bi g_bj  -> x.T @ g   (summed over every leading axis)
    #   db_j  = sum_b g_bj       -> g summed over the batch axes, never over j
    batch_axes = tuple(range(g.ndim - 1))
    dw = jnp.tensordot(x, g, axes=(batch_axes, batch_axes))
    return g @ w.T, dw, jnp.sum(g, axis=batch_axes)


@jax.custom_vjp
def _affine(x, w, b):
    return x @ w + b


def _affine_fwd(x, w, b):
    return _affine(x, w, b), (x, w)  # b is not needed: db depends on g alone


def _affine_bwd(res, g):
    return linear_backward(*res, g)


_affine.defvjp(_affine_fwd, _affine_bwd)


@jax.custom_vjp
def _matmul(x, w):
    return x @ w


def _matmul_fwd(x, w):
    return _matmul(x, w), (x, w)


def _matmul_bwd(res, g):
    dx, dw, _ = linear_backward(*res, g)
    return dx, dw


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def linear(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None) -> Array:
    """The lessons' `lin`: x @ w + b.

    Args:
      x: inputs [..., fan_in].
      w: weight [fan_in, fan_out].
      b: optional bias [fan_out].

    Returns:
      [..., fan_out].
    """
    if jnp.ndim(w) != 2 or jnp.ndim(x) < 1 or jnp.shape(x)[-1] != jnp.shape(w)[0]:
        raise ValueError(
            f"linear: x of shape {jnp.shape(x)} does not fit w of shape {jnp.shape(w)}; "
            "expected x [..., fan_in] and w [fan_in, fan_out]."
        )
    if b is None:
        return _matmul(x, w)
    if jnp.shape(b) != (jnp.shape(w)[1],):
        raise ValueError(
            f"linear: b has shape {jnp.shape(b)}; expected ({jnp.shape(w)[1]},) for w of "
            f"shape {jnp.shape(w)}."
        )
    return _affine(x, w, b)


# ------------------------------------------------------------------------------- relu


def relu_backward(mask: Array, g: Array) -> Array:
    """Cotangent of relu's input given the mask x > 0 (equivalently relu(x) > 0)."""
    # d relu(x)/dx = 1[x > 0]; at exactly 0 the gradient is 0, as jax.nn.relu.
    return jnp.where(mask, g, jnp.zeros_like(g))


@jax.custom_vjp
def relu(x: ArrayLike) -> Array:
    """max(x, 0), with gradient 0 at exactly 0 and NaN kept NaN (as `jax.nn.relu`)."""
    return jax.nn.relu(x)


def _relu_fwd(x):
    return relu(x), x > 0  # residual: a boolean mask, a quarter of float32 x's bytes


def _relu_bwd(mask, g):
    return (relu_backward(mask, g),)


relu.defvjp(_relu_fwd, _relu_bwd)


# ------------------------------------------------------------------------------ losses
# The rules live in `jaxnet.losses`; each op here is one custom_vjp made from them.


def _regression(rule: losses.Loss, pred: ArrayLike, target: ArrayLike) -> Array:
    _checks.check_regression_target(jnp.shape(pred), target, jnp.result_type(pred), rule.name)
    return losses.as_op(rule)(pred, target)


def mse(pred: ArrayLike, target: ArrayLike) -> Array:
    """Mean squared error: mean((pred - target)^2), as lesson 003's `mse`.

    pred is shaped like the float target, or [n, 1] for a target [n]; returns a scalar.
    """
    return _regression(losses.mse(), pred, target)


def sum_squares(pred: ArrayLike, target: ArrayLike) -> Array:
    """Sum of squared errors: the PyTorch tutorial's `(y_pred - y).pow(2).sum()`.

    pred is shaped like the float target, or [n, 1] for a target [n]; returns a scalar.
    """
    return _regression(losses.sum_squares(), pred, target)


@jax.custom_vjp
def log_softmax(logits: ArrayLike) -> Array:
    """log(softmax(logits)) over the last axis, by the stable log-sum-exp."""
    return losses.log_softmax(logits)


def _log_softmax_fwd(logits):
    out = losses.log_softmax(logits)
    return out, out  # softmax = exp(out): no need to keep the logits


def _log_softmax_bwd(out, g):
    # out_i = z_i - lse(z), d lse/dz_j = softmax_j, so
    # dz_j = g_j - softmax_j * sum_i g_i.
    return (g - jnp.exp(out) * jnp.sum(g, axis=-1, keepdims=True),)


log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def softmax_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, label_smoothing: float = 0.0
) -> Array:
    """Mean cross-entropy of softmax(logits) against integer labels.

    Args:
      logits: [..., classes] unnormalised log-probabilities.
      labels: integer classes [...] in [0, classes). Checked on the host when concrete;
        under `jax.jit` an out-of-range label makes the loss and its gradient NaN.
      label_smoothing: s in [0, 1): the target puts 1 - s on the label and spreads s
        evenly over all classes (Szegedy et al. 2016). 0 is plain cross-entropy.

    Returns:
      A scalar.
    """
    _checks.check_labels(jnp.shape(logits), labels, "softmax_cross_entropy")
    return losses.as_op(losses.cross_entropy(label_smoothing))(logits, labels)
