"""Weight initializers: (key, shape, dtype) -> Array, kernels shaped (fan_in, fan_out).

The lessons draw weights with `torch.randn`, an *untruncated* normal, and scale it:
randn (std 1), 1/sqrt(n) (what the lessons call "Xavier"; here `lecun_normal`), and
sqrt(2/n) for ReLU (Kaiming He). `jax.nn.initializers` truncates its normals at two
standard deviations instead. Here every normal is untruncated by default, as in the
lessons; pass `truncated=True` for the `jax.nn.initializers` behaviour. Either way the
standard deviation is the one named, because the truncated draw is rescaled.

Scaled schemes read fans like `jax.nn.initializers`: the last axis is fan_out, the one
before it fan_in, and any leading axes form a receptive field that multiplies both.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.typing import Array, ArrayLike, DTypeLike, Initializer

# Std of a standard normal truncated to [-2, 2]; dividing by it restores std 1.
_TRUNCATED_STD = 0.87962566103423978

_GAINS = {
    "linear": 1.0,
    "identity": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "selu": 0.75,
}


def gain(nonlinearity: str, a: float | None = None) -> float:
    """The gain that keeps activations at unit scale, as `torch.nn.init.calculate_gain`.

    Args:
      nonlinearity: "linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu" or "selu".
      a: negative slope of "leaky_relu" (default 0.01); must be None for the others.

    Returns:
      The gain: sqrt(2) for ReLU, sqrt(2 / (1 + a^2)) for leaky ReLU, and so on.
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if a is None else float(a)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity not in _GAINS:
        raise ValueError(
            f"gain: unknown nonlinearity {nonlinearity!r}; "
            f"expected one of {sorted([*_GAINS, 'leaky_relu'])}."
        )
    if a is not None:
        raise ValueError(f"gain: `a` is only used by 'leaky_relu', not {nonlinearity!r}.")
    return _GAINS[nonlinearity]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shaped (..., fan_in, fan_out)."""
    if len(shape) < 2:
        raise ValueError(
            f"fans: a scaled initializer needs a kernel of rank >= 2 shaped (fan_in, fan_out), "
            f"got shape {tuple(shape)}; use `zeros` or `normal` for biases."
        )
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def _fan(shape: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2
    raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}.")


def _standard_normal(key: ArrayLike, shape, dtype, truncated: bool) -> Array:
    if truncated:
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) / _TRUNCATED_STD
    return jax.random.normal(key, shape, dtype)


def _uniform(key: ArrayLike, shape, dtype, std: float) -> Array:
    # U(-bound, bound) has std bound / sqrt(3).
    bound = std * math.sqrt(3.0)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def normal(
    key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32, *, truncated=False
) -> Array:
    """Standard normal, std 1: the lessons' `randn`. Activations grow by sqrt(fan_in) a layer."""
    return _standard_normal(key, shape, dtype, truncated)


def lecun_normal(
    key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32, *, truncated=False
) -> Array:
    """Normal with std 1/sqrt(fan_in): what the lessons call "Xavier" init."""
    std = 1.0 / math.sqrt(_fan(shape, "fan_in"))
    return std * _standard_normal(key, shape, dtype, truncated)


def glorot_normal(
    key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32, *, truncated=False
) -> Array:
    """Normal with variance 2/(fan_in + fan_out): Glorot and Bengio (2010)."""
    std = 1.0 / math.sqrt(_fan(shape, "fan_avg"))
    return std * _standard_normal(key, shape, dtype, truncated)


def glorot_uniform(key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
    """Uniform with variance 2/(fan_in + fan_out): bound sqrt(6/(fan_in + fan_out))."""
    return _uniform(key, shape, dtype, 1.0 / math.sqrt(_fan(shape, "fan_avg")))


def kaiming_normal(
    key: ArrayLike,
    shape: tuple[int, ...],
    dtype: DTypeLike = jnp.float32,
    *,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    a: float | None = None,
    truncated: bool = False,
) -> Array:
    """Normal with std gain/sqrt(fan): He et al. (2015), sqrt(2/n) for ReLU.

    Args:
      key, shape, dtype: as every initializer.
      mode: "fan_in" keeps the forward activations at unit scale, "fan_out" the gradients.
      nonlinearity, a: passed to `gain`; the default gain is sqrt(2), for ReLU.
      truncated: truncate at two standard deviations (and rescale), as `jax.nn.initializers`.
    """
    std = gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return std * _standard_normal(key, shape, dtype, truncated)


def kaiming_uniform(
    key: ArrayLike,
    shape: tuple[int, ...],
    dtype: DTypeLike = jnp.float32,
    *,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    a: float | None = None,
) -> Array:
    """Uniform with std gain/sqrt(fan): bound gain * sqrt(3/fan), as `torch.nn.init`."""
    return _uniform(key, shape, dtype, gain(nonlinearity, a) / math.sqrt(_fan(shape, mode)))


def torch_default(key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
    """What `torch.nn.Linear` does to its weight: kaiming_uniform with a=sqrt(5).

    The gain sqrt(2/(1+5)) makes the bound 1/sqrt(fan_in), so the std is 1/sqrt(3 fan_in).
    """
    return kaiming_uniform(key, shape, dtype, nonlinearity="leaky_relu", a=math.sqrt(5.0))


def torch_default_bias(
    key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32, *, fan_in: int
) -> Array:
    """What `torch.nn.Linear` does to its bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def zeros(key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
    """All zeros (the key is ignored). Fine for biases; for weights it hides a wrong backward."""
    del key
    return jnp.zeros(shape, dtype)


def orthogonal(
    key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32, *, scale: float = 1.0
) -> Array:
    """A (semi-)orthogonal kernel (Saxe et al. 2014), the starting point of LSUV."""
    return scale * jax.nn.initializers.orthogonal()(key, shape, dtype)


def lsuv(
    params,
    x: ArrayLike,
    *,
    key: ArrayLike | None = None,
    activation=jax.nn.relu,
    tol: float = 0.01,
    max_iters: int = 10,
):
    """Layer-sequential unit-variance init (Mishkin and Matas 2015), as a pure function.

    Walks the layers in order: each weight is rescaled until the std of its layer's output
    on the batch x is 1 within `tol`, then x moves through that layer and `activation`.

    Args:
      params: an MLP params list, as from `jaxnet.init_mlp`.
      x: a data batch [batch, fan_in].
      key: if given, every weight first becomes orthogonal, as the paper does.
      activation: applied between layers (not after the last); the identity for a linear chain.
      tol, max_iters: stop when |std - 1| < tol, or after max_iters rescalings.

    Returns:
      New params of the same structure; biases are kept as they are.
    """
    # One LSUV: the MLP as a network, rescaled by `jaxnet.lsuv.rescale`. Imported here
    # because jaxnet.layers imports this module.
    from jaxnet import layers
    from jaxnet import lsuv as network_lsuv

    if key is not None:
        keys = jax.random.split(key, len(params))
        params = [
            {**p, "w": orthogonal(k, p["w"].shape, p["w"].dtype)} for k, p in zip(keys, params)
        ]
    between = layers.core.elementwise("activation", lambda x: (activation(x), None), None)
    dense = [layers.dense(p["w"].shape[1], bias="b" in p) for p in params]
    net = layers.serial(*[entry for d in dense[:-1] for entry in (d, between)], dense[-1])
    interleaved = [entry for p in params for entry in (p, {})][:-1]
    fitted = network_lsuv.rescale(net, interleaved, [{}] * len(interleaved), x, tol=tol,
                                  max_iters=max_iters)  # fmt: skip
    return fitted[::2]


INITIALIZERS: dict[str, Initializer] = {
    "normal": normal,
    "lecun_normal": lecun_normal,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "torch_default": torch_default,
    "orthogonal": orthogonal,
    "zeros": zeros,
}


def get(name: str) -> Initializer:
    """The initializer called `name`; raises ValueError listing the valid names."""
    try:
        return INITIALIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"init: unknown initializer {name!r}; expected one of {sorted(INITIALIZERS)}."
        ) from None
