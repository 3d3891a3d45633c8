"""Activations: elementwise layers without params, each keeping the smallest residual."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks
from jaxnet.layers import core


def relu() -> core.Layer:
    """max(x, 0), gradient 0 at exactly 0 and NaN kept NaN (as `jax.nn.relu`)."""

    def forward(x):
        y = jax.nn.relu(x)
        return y, y  # residual: the output, also the next layer's input; y > 0 iff x > 0

    def backward(y, g):
        return jnp.where(y > 0, g, jnp.zeros_like(g))  # d relu/dx = 1[x > 0]

    return core.elementwise("relu", forward, backward)


def leaky_relu(negative_slope: float = 0.01) -> core.Layer:
    """x for x > 0, negative_slope * x otherwise (lesson 002's LeakyReLU)."""
    negative_slope = _checks.number(negative_slope, "leaky_relu: negative_slope")
    if not negative_slope > 0:
        raise ValueError(f"leaky_relu: negative_slope={negative_slope} must be > 0 (0 is relu()).")

    def forward(x):
        y = jnp.where(x > 0, x, negative_slope * x)
        return y, y  # a positive slope keeps the sign: y > 0 iff x > 0

    def backward(y, g):
        return jnp.where(y > 0, g, negative_slope * g)  # dy/dx = 1 or the slope

    return core.elementwise("leaky_relu", forward, backward)


def general_relu(*, leak: float = 0.0, sub: float = 0.0, maxv: float | None = None) -> core.Layer:
    """fast.ai's GeneralRelu: leaky_relu(x, leak) - sub, clamped at maxv.

    Lesson 003's `Relu` is general_relu(sub=0.5): the shift re-centres the output near 0.
    """
    leak, sub = _checks.number(leak, "general_relu: leak"), _checks.number(sub, "general_relu: sub")
    maxv = None if maxv is None else _checks.number(maxv, "general_relu: maxv")
    if leak < 0:
        raise ValueError(f"general_relu: leak={leak} must be >= 0.")

    def forward(x):
        positive = x > 0
        y = jnp.where(positive, x, leak * x) - sub
        clamped = None
        if maxv is not None:
            clamped = y >= maxv  # False for NaN: a NaN stays NaN, as torch's clamp keeps it
            y = jnp.where(clamped, jnp.asarray(maxv, y.dtype), y)
        # residual: the masks (1 byte each); x - sub + sub need not round back to x > 0.
        return y, (positive, clamped)

    def backward(masks, g):
        positive, clamped = masks
        # dy/dx = (1 if x > 0 else leak) where y is below maxv, and 0 where clamped.
        dx = jnp.where(positive, g, leak * g)
        return dx if clamped is None else jnp.where(clamped, jnp.zeros_like(g), dx)

    return core.elementwise("general_relu", forward, backward)


def tanh() -> core.Layer:
    """tanh(x); its derivative 1 - tanh^2 needs only the output."""

    def forward(x):
        y = jnp.tanh(x)
        return y, y

    def backward(y, g):
        return g * (1 - y * y)  # d tanh(x)/dx = 1 - tanh(x)^2

    return core.elementwise("tanh", forward, backward)


_GELU_C = float(np.sqrt(2 / np.pi))
_GELU_A = 0.044715
_SQRT_HALF = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1 / np.sqrt(2 * np.pi))


def gelu(*, approximate: bool = True) -> core.Layer:
    """GELU, y = x Phi(x), Phi the standard normal CDF (Hendrycks and Gimpel 2016).

    Args:
      approximate: True (`jax.nn.gelu`'s default) uses the tanh form
        0.5 x (1 + tanh(c (x + a x^3))), c = sqrt(2 / pi), a = 0.044715; False the exact
        erf form, as torch's `nn.GELU()` and nanoGPT.

    Residual: dy/dx itself, computed in the forward beside y from the same erf or tanh, so
    the backward is one multiply (and x, which only GELU needs, is not kept).
    """
    approximate = _checks.boolean(approximate, "gelu: approximate")

    def forward(x):
        if approximate:
            # u = c (x + a x^3), t = tanh(u): y = 0.5 x (1 + t),
            # dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2).
            t = jnp.tanh(_GELU_C * (x + _GELU_A * x**3))
            half = 0.5 * (1 + t)
            slope = half + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_A * x * x)
            return x * half, slope
        # y = x Phi(x): dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
        cdf = 0.5 * (1 + jax.lax.erf(x * _SQRT_HALF))
        return x * cdf, cdf + x * jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI

    def backward(slope, g):
        return g * slope

    return core.elementwise("gelu", forward, backward)
