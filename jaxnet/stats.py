"""Activation statistics through layers: how init scale makes signals explode or vanish."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import initializers
from jaxnet.typing import Array, ArrayLike

VANISH = 1e-30


class Moments(NamedTuple):
    mean: float
    std: float


def moments(x: ArrayLike) -> Moments:
    """Mean and std over every element, as Python floats."""
    return Moments(float(jnp.mean(x)), float(jnp.std(x)))


def fixed_scale(scale: float):
    """An initializer `scale * randn`, like the lesson's `0.1 * torch.randn(100, 100)`."""

    def init(key, shape, dtype=jnp.float32):
        return scale * initializers.normal(key, shape, dtype)

    return init


def chain_weights(key: ArrayLike, init, depth: int, width: int, dtype=jnp.float32) -> Array:
    """depth square kernels [depth, width, width], each drawn by `init`."""
    keys = jax.random.split(key, depth)
    return jnp.stack([init(k, (width, width), dtype) for k in keys])


def safe_moments(h: Array) -> tuple[Array, Array]:
    """(mean, std) of h computed on h / m, m = max|h|, then scaled back by m.

    Plain `jnp.std` squares the values, reaching inf at 1e19 in float32, long before the
    activations themselves do (3.4e38); a plain mean overflows in its sum. The division is
    two multiplications by 1/sqrt(m): 1/m itself can be subnormal, which the CPU flushes
    to zero. Non-finite h gives NaN.
    """
    m = jnp.max(jnp.abs(h))
    r = jnp.where(m > 0, jax.lax.rsqrt(m), 1)
    scaled = (h * r) * r
    ok = jnp.isfinite(m)
    return jnp.where(ok, m * jnp.mean(scaled), jnp.nan), jnp.where(ok, m * jnp.std(scaled), jnp.nan)


def chain_stds(x: ArrayLike, weights: Array, *, relu: bool) -> tuple[Array, Array]:
    """(mean, std) after each layer of x @ w (then ReLU), as one jitted scan.

    Once a layer overflows, it and every later layer report NaN: XLA's max(nan, 0) is 0,
    so a ReLU would otherwise hide the overflow as a vanishing signal.
    """

    def layer(carry, w):
        h, broken = carry
        h = h @ w
        broken = broken | ~jnp.all(jnp.isfinite(h))
        h = jnp.maximum(h, 0) if relu else h
        mean, std = safe_moments(h)
        return (h, broken), (jnp.where(broken, jnp.nan, mean), jnp.where(broken, jnp.nan, std))

    run = jax.jit(lambda x, ws: jax.lax.scan(layer, (x, jnp.bool_(False)), ws)[1])
    return run(x, weights)


def first_failure(stds: ArrayLike) -> tuple[int | None, str]:
    """The first layer (1-based) whose activations overflow (inf/nan) or vanish (std < 1e-30)."""
    stds = np.asarray(stds, np.float64)
    for i, s in enumerate(stds, start=1):
        if not np.isfinite(s):
            return i, "overflow"
        if s < VANISH:
            return i, "vanish"
    return None, "ok"
