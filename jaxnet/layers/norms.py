"""Normalization layers: layer_norm (per example) and batch_norm (per feature, with state)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks
from jaxnet.layers import core


def _scale_bias_init(key, input_shape, dtype=jnp.float32):
    """A norm layer's init: scale 1 and bias 0 per feature (the last axis), no state."""
    del key
    features = input_shape[-1]
    params = {"scale": jnp.ones((features,), dtype), "bias": jnp.zeros((features,), dtype)}
    return tuple(input_shape), params, {}


def _check_features(name: str, x, params) -> None:
    core.check_fits(name, x, params["scale"], "scale")


def _eps(name: str, eps) -> float:
    eps = _checks.number(eps, f"{name}: eps")
    if not eps > 0:
        raise ValueError(f"{name}: eps={eps} must be > 0: it keeps 1/sqrt(var + eps) finite.")
    return eps


def layer_norm(*, eps: float = 1e-5, bias: bool = True) -> core.Layer:
    """Normalizes each example over its last axis, then scale * xhat + bias.

    Args:
      eps: added to the variance.
      bias: with the "bias" param; False leaves scale * xhat alone (nanoGPT's bias=False).

    Params: {"scale": [features], "bias": [features]} ("bias" only with bias=True).
    Residual: xhat and 1/std.
    """
    eps = _eps("layer_norm", eps)
    bias = _checks.boolean(bias, "layer_norm: bias")

    def init(key, input_shape, dtype=jnp.float32):
        shape, params, state = _scale_bias_init(key, input_shape, dtype)
        return shape, (params if bias else {"scale": params["scale"]}), state

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        _check_features("layer_norm", x, params)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        rstd = jax.lax.rsqrt(var + eps)
        xhat = (x - mean) * rstd
        y = xhat * params["scale"]
        return (y + params["bias"] if "bias" in params else y), (xhat, rstd), state

    def backward(params, residual, g):
        # Per row of k features: xhat = (x - mu) r, r = (var + eps)^(-1/2), y = s xhat + b.
        # With h = g s (the cotangent of xhat), d mu/dx = 1/k, d var/dx_i = 2 (x_i - mu)/k:
        #   dx = r (h - mean(h) - xhat mean(h xhat)),
        # dscale = sum of g xhat and dbias = sum of g over every leading axis.
        xhat, rstd = residual
        axes = tuple(range(g.ndim - 1))
        h = g * params["scale"]
        dx = rstd * (
            h
            - jnp.mean(h, axis=-1, keepdims=True)
            - xhat * jnp.mean(h * xhat, axis=-1, keepdims=True)
        )
        grads = {"scale": jnp.sum(g * xhat, axis=axes)}
        if "bias" in params:
            grads["bias"] = jnp.sum(g, axis=axes)
        return grads, dx

    return core.Layer(init, forward, backward, "layer_norm")


def batch_norm(*, momentum: float = 0.1, eps: float = 1e-5) -> core.Layer:
    """Batch normalization over every axis but the last (features), as torch's BatchNorm1d.

    Train mode normalizes with the batch mean and the BIASED variance (divide by n) and
    moves the running statistics as torch does: mean <- (1 - m) mean + m batch_mean,
    var <- (1 - m) var + m batch_var * n / (n - 1) (the running estimate is unbiased).
    Eval mode uses the running statistics: an affine map with a simple backward.

    Params: {"scale", "bias"} [features]; state: {"mean", "var"} [features], which keeps its
    dtype across steps.
    """
    momentum, eps = _checks.number(momentum, "batch_norm: momentum"), _eps("batch_norm", eps)
    if not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm: momentum={momentum} must lie in [0, 1].")

    def init(key, input_shape, dtype=jnp.float32):
        shape, params, _ = _scale_bias_init(key, input_shape, dtype)
        features = input_shape[-1]
        state = {"mean": jnp.zeros((features,), dtype), "var": jnp.ones((features,), dtype)}
        return shape, params, state

    def forward(params, state, x, *, train=False, key=None):
        del key
        _check_features("batch_norm", x, params)
        axes = tuple(range(x.ndim - 1))
        if not train:
            rstd = jax.lax.rsqrt(state["var"].astype(x.dtype) + eps)
            xhat = (x - state["mean"].astype(x.dtype)) * rstd
            residual = {"xhat": xhat, "running_rstd": rstd}  # the key says: eval mode
            return xhat * params["scale"] + params["bias"], residual, state
        n = int(np.prod(x.shape[:-1]))
        if n < 2:
            raise core.LayerError(
                f"batch_norm: train mode needs at least 2 examples per feature, got input of "
                f"shape {x.shape}: the variance of one example is 0 and its unbiased running "
                "estimate divides by n - 1 = 0. Use a larger batch, eval mode (train=False), or "
                "layer_norm."
            )
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: divide by n
        rstd = jax.lax.rsqrt(var + eps)
        xhat = (x - mean) * rstd
        running = {
            "mean": (1 - momentum) * state["mean"] + momentum * mean.astype(state["mean"].dtype),
            "var": (1 - momentum) * state["var"]
            + momentum * (var * (n / (n - 1))).astype(state["var"].dtype),
        }
        return xhat * params["scale"] + params["bias"], {"xhat": xhat, "rstd": rstd}, running

    def backward(params, residual, g):
        xhat = residual["xhat"]
        axes = tuple(range(g.ndim - 1))
        dscale, dbias = jnp.sum(g * xhat, axis=axes), jnp.sum(g, axis=axes)
        if "running_rstd" in residual:
            # Eval mode: xhat = (x - running_mean) r is affine in x, so dx = s r g.
            dx = g * (params["scale"] * residual["running_rstd"])
            return {"scale": dscale, "bias": dbias}, dx
        # Train mode: mu and var depend on every row. makemore part 4's one-line backward,
        #   dx = s r / n (n g - sum(g) - xhat sum(g xhat))   (sums over the batch, per feature)
        # with the biased variance; the lecture's Bessel-corrected forward puts n / (n - 1)
        # before the last sum, here it is 1. The two sums are dbias and dscale, already made.
        n = int(np.prod(g.shape[:-1]))
        dx = (params["scale"] * residual["rstd"]) * (g - dbias / n - xhat * (dscale / n))
        return {"scale": dscale, "bias": dbias}, dx

    return core.Layer(init, forward, backward, "batch_norm")
