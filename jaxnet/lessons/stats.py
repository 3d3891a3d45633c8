"""Activation statistics through layers: how init scale makes signals explode or vanish.

`chain_stds` follows a bare chain of matrix products; `probe()` is a layer that records
what passes through a network, as fast.ai's hooks do, but as state inside the jitted step;
`verdict` says what a chain's stds mean."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import initializers, layers
from jaxnet.typing import Array, ArrayLike


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


HOLDS = (0.1, 10.0)
VERDICTS = ("holds", "explodes", "vanishes", "overflows", "underflows")


class Verdict(NamedTuple):
    """What a chain's activations did, and the first layer (1-based) where it showed.

    holds: the final std lies in HOLDS = [0.1, 10] (layer None).
    explodes / vanishes: the final std is finite but above 10 / positive but below 0.1;
      layer: the first layer whose std went above 10 / below 0.1.
    overflows: some layer's activations reached inf or nan; layer: the first.
    underflows: some layer's std is exactly 0, the signal gone; layer: the first.
    """

    verdict: str
    layer: int | None
    final_std: float


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask)) + 1


def verdict(stds: ArrayLike) -> Verdict:
    """The verdict on a chain from its std after each layer (as from `chain_stds`)."""
    stds = np.asarray(stds, np.float64).reshape(-1)
    if not stds.size:
        raise ValueError("verdict: stds is empty; expected one std per layer.")
    low, high = HOLDS
    for mask, name in ((~np.isfinite(stds), "overflows"), (stds == 0, "underflows")):
        if mask.any():
            return Verdict(name, _first(mask), float(stds[-1]))
    final = float(stds[-1])
    if low <= final <= high:
        return Verdict("holds", None, final)
    if final > high:
        return Verdict("explodes", _first(stds > high), final)
    return Verdict("vanishes", _first(stds < low), final)


def first_out_of_band(stds: ArrayLike) -> tuple[int | None, int | None]:
    """(step, layer) where any layer's std [steps, layers] first leaves HOLDS = [0.1, 10]:
    step 0-based, layer 1-based; NaN counts as out. (None, None) if none ever does."""
    stds = np.asarray(stds, np.float64)
    low, high = HOLDS
    out = ~((stds >= low) & (stds <= high))
    if not out.any():
        return None, None
    step = int(np.argmax(out.any(axis=1)))
    return step, _first(out[step])


# ------------------------------------------------------------------------------ probe


def probe(*, bins: int = 40, max_abs: float = 10.0, near_zero: float = 0.5) -> layers.Layer:
    """An identity layer whose new state is the statistics of what passed through it.

    fast.ai's activation hooks as a pure layer: put one after each activation, and the
    new state that `network_loss` returns from a jitted training step (or a `lax.scan` of
    them) carries, per probe: "mean", "std", "near_zero" (the fraction of |x| < near_zero;
    fast.ai's first two of 40 bins over [0, 10]) and "hist" [bins], the counts of |x| in
    [0, max_abs) for the "colorful dimension" plot. Statistics are float32 whatever x is.
    """
    if not (isinstance(bins, int) and bins > 0 and max_abs > 0 and near_zero >= 0):
        raise ValueError(
            f"probe: bins={bins!r} must be a positive int, max_abs={max_abs} > 0 and "
            f"near_zero={near_zero} >= 0."
        )

    def init(key, input_shape, dtype=jnp.float32):
        del key, dtype
        scalar = jnp.zeros((), jnp.float32)
        state = {"mean": scalar, "std": scalar, "near_zero": scalar,
                 "hist": jnp.zeros((bins,), jnp.float32)}  # fmt: skip
        return tuple(input_shape), {}, state

    def forward(params, state, x, *, train=False, key=None):
        del params, state, train, key
        x32 = jnp.asarray(x, jnp.float32)
        magnitude = jnp.abs(x32)
        hist, _ = jnp.histogram(magnitude, bins=bins, range=(0.0, max_abs))
        new_state = {"mean": jnp.mean(x32), "std": jnp.std(x32),
                     "near_zero": jnp.mean((magnitude < near_zero).astype(jnp.float32)),
                     "hist": hist.astype(jnp.float32)}  # fmt: skip
        return x, None, new_state

    def backward(params, residual, g):
        del params, residual
        return {}, g  # the identity: dx = g

    return layers.Layer(init, forward, backward, "probe")
