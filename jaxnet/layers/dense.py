"""The lessons' `lin` as a layer: dense, y = x @ w + b over the last axis."""

import jax
import jax.numpy as jnp

from jaxnet import _checks, initializers, ops
from jaxnet.layers import core
from jaxnet.typing import Initializer


def _initializer(init: "str | Initializer") -> Initializer:
    if callable(init):
        return init
    return initializers.get(init)


def _fan_in(input_shape) -> int:
    if not input_shape or input_shape[-1] < 1:
        raise core.LayerError(
            f"dense: input_shape={tuple(input_shape)!r} has no features on its last axis; "
            "expected [..., fan_in] with fan_in >= 1."
        )
    return input_shape[-1]


def dense(
    features: int, *, bias: bool = True, init: "str | Initializer" = "kaiming_normal"
) -> core.Layer:
    """The lessons' `lin`: y = x @ w + b over the last axis.

    Args:
      features: fan_out.
      bias: with a bias "b" (zero-initialised, except under "torch_default"); no "b" key
        at all when False.
      init: a name from `jaxnet.initializers.INITIALIZERS` or a callable
        (key, shape, dtype) -> Array, as `jax.nn.initializers`.

    Params: {"w": [fan_in, fan_out], "b": [fan_out]}.
    """
    features = _checks.positive_int(features, "dense: features")
    bias = _checks.boolean(bias, "dense: bias")
    w_init = _initializer(init)

    def init_fn(key, input_shape, dtype=jnp.float32):
        fan_in = _fan_in(input_shape)
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, (fan_in, features), dtype)}
        if bias:
            params["b"] = (
                initializers.torch_default_bias(b_key, (features,), dtype, fan_in=fan_in)
                if init == "torch_default"
                else initializers.zeros(b_key, (features,), dtype)
            )
        return (*input_shape[:-1], features), params, {}

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        w = params["w"]
        core.check_fits("dense", x, w, "w")
        if "b" in params and jnp.shape(params["b"]) != (w.shape[-1],):
            raise core.LayerError(
                f"dense: b has shape {jnp.shape(params['b'])}; expected ({w.shape[-1]},) to match "
                f"w of shape {w.shape}."
            )
        y = x @ w
        return (y + params["b"] if "b" in params else y), x, state  # residual: the input

    def backward(params, x, g):
        # The lessons' lin_grad, derived beside `jaxnet.ops.linear_backward`:
        # dx = g @ w.T, dw = x.T @ g and db = g summed over the leading axes.
        dx, dw, db = ops.linear_backward(x, params["w"], g)
        return ({"w": dw, "b": db} if "b" in params else {"w": dw}), dx

    return core.Layer(init_fn, forward, backward, "dense")
