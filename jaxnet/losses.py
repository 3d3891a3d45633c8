"""Losses as values: each a forward rule and a hand-derived backward rule, side by side.

A `Loss` is what `network_loss`, `mlp_loss` and the training loops take; the names
("mse", "sum_squares", "cross_entropy") map to them in one place, `get`.

    forward(pred, target) -> (value, residual)     # plain jax.numpy; the smallest residual
    backward(residual, g) -> (dpred, dtarget)       # dtarget is None for integer labels

`backward` returns dpred in the target's shape for the regression losses (a prediction
[n, 1] meets a target [n], as the lessons squeeze it); callers reshape it to the prediction.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxnet import _checks, vjp
from jaxnet.typing import Array, ArrayLike


class Loss(NamedTuple):
    """A loss: its rules, the check of its target, and its name."""

    forward: Callable  # (pred, target) -> (value, residual)
    backward: Callable  # (residual, g) -> (dpred, dtarget)
    check: Callable  # (pred_shape, target, dtype, what) -> None; raises on bad targets
    name: str
    label_smoothing: float = 0.0

    def value(self, pred: ArrayLike, target: ArrayLike) -> Array:
        """The loss of pred against target, in plain jax.numpy (for `jax.grad`)."""
        return self.forward(jnp.asarray(pred), jnp.asarray(target))[0]


def _squeeze_to(pred: Array, target: ArrayLike) -> Array:
    """pred reshaped to target's shape: [n, 1] to [n], as the lessons' squeeze."""
    return pred.reshape(jnp.shape(target))


# ------------------------------------------------------------------------ regression


def _mse_forward(pred, target):
    diff = _squeeze_to(pred, target) - target
    return jnp.mean(jnp.square(diff)), diff  # residual: the difference alone


def _mse_backward(diff, g):
    # d/dp mean((p - t)^2) = 2 (p - t) / size, and d/dt is its negative.
    dpred = g * (2.0 / diff.size) * diff
    return dpred, -dpred


def _sum_squares_forward(pred, target):
    diff = _squeeze_to(pred, target) - target
    return jnp.sum(jnp.square(diff)), diff


def _sum_squares_backward(diff, g):
    # d/dp sum((p - t)^2) = 2 (p - t): lesson 001's grad_y_pred = 2.0 * (y_pred - y).
    dpred = (2.0 * g) * diff
    return dpred, -dpred


def mse() -> Loss:
    """Mean squared error, mean((pred - target)^2), as lesson 003's `mse`."""
    return Loss(_mse_forward, _mse_backward, _checks.check_regression_target, "mse")


def sum_squares() -> Loss:
    """Sum of squared errors, the PyTorch tutorial's `(y_pred - y).pow(2).sum()`."""
    return Loss(
        _sum_squares_forward, _sum_squares_backward, _checks.check_regression_target, "sum_squares"
    )


# --------------------------------------------------------------------- cross-entropy


def log_softmax(logits: Array) -> Array:
    """logits - logsumexp(logits) over the last axis: the stable log-softmax."""
    return logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)


def _valid_labels(labels: Array, classes: int) -> Array:
    return (labels >= 0) & (labels < classes)


def _nll(logp: Array, labels: Array, smoothing: float) -> Array:
    """Per-example -sum_j t_j logp_j, t = (1 - smoothing) onehot + smoothing / classes.

    NaN where a label is out of range (only checkable on the host, not under jit).
    """
    classes = logp.shape[-1]
    picked = jnp.take_along_axis(logp, jnp.clip(labels, 0, classes - 1)[..., None], axis=-1)
    nll = -picked[..., 0]
    if smoothing:
        nll = (1 - smoothing) * nll - smoothing * jnp.mean(logp, axis=-1)
    return jnp.where(_valid_labels(labels, classes), nll, jnp.nan)


def _counted(labels: Array, ignore_index: int | None) -> tuple[Array | None, Array]:
    """(mask of the positions that count or None for all, how many count, at least 1)."""
    if ignore_index is None:
        return None, jnp.asarray(labels.size)
    mask = labels != ignore_index
    return mask, jnp.maximum(jnp.sum(mask), 1)


def cross_entropy(label_smoothing: float = 0.0, ignore_index: int | None = None) -> Loss:
    """Mean cross-entropy of softmax(logits) against integer labels, over every position.

    The logits are [..., classes] and the labels [...], e.g. a language model's [B, T, vocab]
    next-token logits against [B, T] ids: the mean runs over all B * T positions.

    Args:
      label_smoothing: s in [0, 1): the target puts 1 - s on the label and spreads s evenly
        over every class (Szegedy et al. 2016). 0 is plain cross-entropy.
      ignore_index: as torch's: positions whose label equals it contribute nothing and are
        not counted in the mean (padding). A batch where every label is ignored has loss 0
        and gradient 0. None (the default) counts every position.
    """
    smoothing = _checks.label_smoothing(label_smoothing)
    if ignore_index is not None:
        ignore_index = _checks.integer(ignore_index, "cross_entropy: ignore_index")

    def forward(logits, labels):
        logp = log_softmax(logits)
        mask, count = _counted(labels, ignore_index)
        if mask is None:
            nll = _nll(logp, labels, smoothing)
        else:  # an ignored label may lie outside [0, classes): read class 0 there, then drop it
            nll = jnp.where(mask, _nll(logp, jnp.where(mask, labels, 0), smoothing), 0.0)
        return jnp.sum(nll) / count.astype(nll.dtype), (logp, labels)

    def backward(residual, g):
        # loss = sum_b m_b (lse(z_b) - sum_j t_bj z_bj) / n with sum_j t_bj = 1, so
        # dz_bj = m_b (softmax_bj - t_bj) / n, where m_b is 0 for an ignored position and n
        # counts the others. Integer labels get no cotangent (None).
        logp, labels = residual
        classes = logp.shape[-1]
        mask, count = _counted(labels, ignore_index)
        target = jax.nn.one_hot(labels, classes, dtype=logp.dtype)  # ignored rows: masked below
        if smoothing:
            target = (1 - smoothing) * target + smoothing / classes
        dlogits = (g / count.astype(logp.dtype)) * (jnp.exp(logp) - target)
        valid = _valid_labels(labels, classes)
        if mask is not None:
            dlogits = jnp.where(mask[..., None], dlogits, 0.0)
            valid = valid | ~mask
        return jnp.where(valid[..., None], dlogits, jnp.nan), None

    def check(logits_shape, labels, dtype, what):
        del dtype  # integer labels; the logits' dtype does not constrain them
        _checks.check_labels(logits_shape, labels, what, ignore_index=ignore_index)

    return Loss(forward, backward, check, "cross_entropy", smoothing)


# -------------------------------------------------------------------------- by name

_FACTORIES = {"mse": mse, "sum_squares": sum_squares, "cross_entropy": cross_entropy}
NAMES = tuple(_FACTORIES)


def get(loss: "str | Loss", label_smoothing: float = 0.0) -> Loss:
    """The Loss for a name or a Loss value; label_smoothing applies to a name only.

    Raises:
      ValueError: an unknown name; smoothing for a loss other than cross_entropy; or
        smoothing passed beside a Loss value (which carries its own).
    """
    if isinstance(loss, Loss):
        if _checks.label_smoothing(label_smoothing, loss.name):
            raise ValueError(
                f"label_smoothing={label_smoothing} was passed with a Loss value, which "
                "carries its own; build it as jaxnet.losses.cross_entropy(label_smoothing=...)."
            )
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a name {list(NAMES)} or a jaxnet.losses.Loss, got {loss!r}.")
    _checks.one_of(loss, NAMES, "loss")
    smoothing = _checks.label_smoothing(label_smoothing, loss)
    return cross_entropy(smoothing) if loss == "cross_entropy" else _FACTORIES[loss]()


def as_op(loss: Loss) -> Callable[[Array, Array], Array]:
    """loss(pred, target) as one `jax.custom_vjp` made from its rules (the "ops" mode)."""
    return vjp.loss(loss)
