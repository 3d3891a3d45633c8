"""The layer contract and its combinators: `Layer`, `serial`, `residual`, `apply`, `init`.

Each layer constructor returns a `Layer`, a NamedTuple of pure functions:

    init(key, input_shape, dtype=jnp.float32) -> (output_shape, params, state)
    forward(params, state, x, *, train, key) -> (out, residual, new_state)
    backward(params, residual, g) -> (dparams, dx)

`forward` is plain jax.numpy and keeps the smallest residual its `backward` needs;
`backward` is derived by hand, with the derivation beside it. `serial(*layers)` is again a
Layer whose backward walks the layers in reverse, as lesson 003's `Model.backward`, and
`jaxnet.vjp` ties any such network into one `jax.custom_vjp`.

A combinator (serial, residual) writes its walk over its children ONCE, as `compose`:

    compose(child, params, state, x, *, train, key) -> (out, residuals, new_state)

where `child(layer)` is the function that runs one child with forward's signature. Its
`forward` is `compose` with each child's own forward rule; `run` passes a child that
recurses into nested combinators and hands each leaf to a given function (the "ops" and
"autodiff" modes, `lsuv`, the checker's trace), so no mode needs a second copy of the walk.

A layer whose backward is deliberately not the derivative of its forward (a
straight-through estimator) sets `definition`: a forward with the same value whose
`jax.grad` is the intended backward. The "autodiff" mode and the checks use it.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks
from jaxnet.typing import Array, ArrayLike, DTypeLike, PyTree


class Layer(NamedTuple):
    """A layer's pure rules. See the module docstring for the signatures."""

    init: Callable
    forward: Callable
    backward: Callable
    name: str = "layer"
    # (params, state, x, *, train, key) -> (out, new_state) whose jax.grad is `backward`,
    # for a layer whose backward is not the derivative of `forward`; None otherwise.
    definition: Callable | None = None
    # For a combinator: its one walk, (child, params, state, x, *, train, key)
    # -> (out, residuals, new_state); see the module docstring. None for a leaf.
    compose: Callable | None = None


class LayerError(ValueError):
    """A layer was given input it cannot take; the message says which layer and why."""


# ------------------------------------------------------------------ checks and helpers


def check_float(name: str, x) -> None:
    """Raises TypeError, naming the layer, unless x is a floating array."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{name}: input has dtype {jnp.result_type(x)}; expected a floating array. "
            "Integer token ids go through an embedding layer first."
        )


def check_fits(name: str, x, param, what: str) -> None:
    """x's last axis must match param's first (its features), and x its dtype."""
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != param.shape[0]:
        raise LayerError(
            f"{name}: input of shape {jnp.shape(x)} does not fit {what} of shape "
            f"{param.shape}; expected [..., {param.shape[0]}], features on the last axis."
        )
    if not jnp.issubdtype(jnp.result_type(param), jnp.floating):
        raise TypeError(
            f"{name}: {what} has dtype {jnp.result_type(param)}; parameters must be floating. "
            "Build them with the network's init, or cast with .astype('float32')."
        )
    if jnp.result_type(x) != jnp.result_type(param):
        raise TypeError(
            f"{name}: input has dtype {jnp.result_type(x)} but {what} is "
            f"{jnp.result_type(param)}; cast with x.astype({str(jnp.result_type(param))!r})."
        )


def stateless_init(key, input_shape, dtype=jnp.float32):
    """The init of a layer without params or state that keeps its input's shape."""
    del key, dtype
    return tuple(input_shape), {}, {}


def elementwise(name: str, forward_fn: Callable, backward_fn: Callable) -> Layer:
    """A layer y = f(x) of no params: forward_fn(x) -> (y, residual); backward_fn(residual, g)."""

    def forward(params, state, x, *, train=False, key=None):
        del params, train, key
        check_float(name, x)
        y, residual = forward_fn(x)
        return y, residual, state

    def backward(params, residual, g):
        del params
        return {}, backward_fn(residual, g)

    return Layer(stateless_init, forward, backward, name)


# ----------------------------------------------------------------------- combinators


def _own_rules(layer: Layer) -> Callable:
    return layer.forward


def combinator(name: str, init: Callable, compose: Callable, backward: Callable) -> Layer:
    """A Layer whose forward is its one walk, `compose`, with each child's own forward."""
    return Layer(init, functools.partial(compose, _own_rules), backward, name, compose=compose)


def _split(key, n: int, name: str = "serial") -> list:
    if key is None:
        return [None] * n
    _checks.prng_key(key, name)
    return list(jax.random.split(key, n))


def _check_list(name: str, value, n: int, what: str, layers) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = type(value).__name__
        if isinstance(value, (list, tuple)):
            got = f"a {got} of {len(value)}"
        kinds = [layer.name for layer in layers]
        raise LayerError(
            f"{name}: {what} must be a list with one entry per layer ({n}: {kinds}), got {got}; "
            f"build them with the network's init."
        )


def _at_layer(i: int, layer: Layer, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs), its errors prefixed with the layer's index and name."""
    try:
        return fn(*args, **kwargs)
    except (LayerError, TypeError) as e:
        if type(e) not in (LayerError, TypeError):  # JAX's own errors keep their form
            raise
        raise type(e)(f"layer {i} ({layer.name}): {e}") from e


def serial(*layers: Layer) -> Layer:
    """Layers in sequence: itself a Layer, as stax's serial.

    Params and state are lists with one entry per layer ({} for a layer without any); the
    residual is the list of the layers' residuals. Its backward is lesson 003's
    `Model.backward`, made pure: each layer's backward, from the last to the first.
    """
    if not layers or not all(isinstance(layer, Layer) for layer in layers):
        raise TypeError(
            f"serial: expected one or more jaxnet.layers.Layer values, got {layers!r}; "
            "call the constructors, e.g. serial(dense(10), relu())."
        )

    def init(key, input_shape, dtype=jnp.float32):
        params, state, shape = [], [], tuple(input_shape)
        for layer, layer_key in zip(layers, jax.random.split(key, len(layers))):
            shape, p, s = layer.init(layer_key, shape, dtype)
            params.append(p)
            state.append(s)
        return shape, params, state

    def compose(child, params, state, x, *, train=False, key=None):
        _check_list("serial", params, len(layers), "params", layers)
        _check_list("serial", state, len(layers), "state", layers)
        residuals, new_state = [], []
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state, _split(key, len(layers)))):
            x, r, s = _at_layer(i, layer, child(layer), p, s, x, train=train, key=k)
            residuals.append(r)
            new_state.append(s)
        return x, residuals, new_state

    def backward(params, residuals, g):
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            grads[i], g = layers[i].backward(params[i], residuals[i], g)
            if g is None and i > 0:
                raise LayerError(
                    f"serial: layer {i} ({layers[i].name}) takes integer input, so it must "
                    "come first."
                )
        return grads, g

    return combinator("serial", init, compose, backward)


def residual(*layers: Layer) -> Layer:
    """x + serial(*layers)(x), e.g. a pre-norm block:
    residual(layer_norm(), dense(hidden), gelu(), dense(features)).

    Params and state are those of serial(*layers). Its backward adds the incoming cotangent
    (the skip path's) to the inner chain's dx.
    """
    inner = serial(*layers)

    def init(key, input_shape, dtype=jnp.float32):
        shape, params, state = inner.init(key, input_shape, dtype)
        if tuple(shape) != tuple(input_shape):
            raise LayerError(
                f"residual: the inner layers map {tuple(input_shape)} to {tuple(shape)}; "
                "x + f(x) needs f to keep the shape (end the block with dense(features of x))."
            )
        return shape, params, state

    def compose(child, params, state, x, *, train=False, key=None):
        y, res, new_state = inner.compose(child, params, state, x, train=train, key=key)
        return x + y, res, new_state

    def backward(params, res, g):
        grads, dx = inner.backward(params, res, g)
        return grads, g + dx  # d(x + f(x)) = g + f'(x)^T g

    return combinator("residual", init, compose, backward)


# ------------------------------------------------------------------------ running


def plain(layer: Layer, params, state, x, *, train=False, key=None):
    """(out, new_state) of a leaf layer by its definition: its forward, or for a
    straight-through layer the forward whose jax.grad is its backward."""
    if layer.definition is not None:
        return layer.definition(params, state, x, train=train, key=key)
    out, _, new_state = layer.forward(params, state, x, train=train, key=key)
    return out, new_state


def run(layer: Layer, leaf_apply: Callable, params, state, x, *, train=False, key=None):
    """(out, new_state): a combinator walks its layers; each leaf goes through leaf_apply(leaf),
    a function (params, state, x, *, train, key) -> (out, new_state)."""
    if layer.compose is None:
        return leaf_apply(layer)(params, state, x, train=train, key=key)

    def child(inner: Layer) -> Callable:
        def apply(p, s, x, *, train=False, key=None):
            out, s = run(inner, leaf_apply, p, s, x, train=train, key=key)
            return out, None, s

        return apply

    out, _, new_state = layer.compose(child, params, state, x, train=train, key=key)
    return out, new_state


def _plain_apply(layer: Layer):
    return functools.partial(plain, layer)


def apply(
    net: Layer, params: PyTree, state: PyTree, x: ArrayLike, *, train: bool = False, key=None
) -> tuple[Array, PyTree]:
    """The plain forward, for inference: (out, new_state).

    Eval mode by default (batch_norm uses its running statistics, dropout is the identity).
    Under `jax.jit`, close over `net` or mark it static: it is a NamedTuple of functions.
    """
    require_layer(net)
    return run(net, _plain_apply, params, state, jnp.asarray(x), train=train, key=key)


def require_layer(net) -> None:
    """Raises TypeError unless net is a Layer."""
    if not isinstance(net, Layer):
        raise TypeError(
            f"net must be a jaxnet.layers.Layer (e.g. layers.serial(...)), got "
            f"{type(net).__name__}."
        )


def init(net: Layer, key: ArrayLike, input_shape, dtype: DTypeLike = jnp.float32):
    """net.init with its arguments checked: (output_shape, params, state)."""
    require_layer(net)
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape={input_shape!r} must list positive ints and include the batch axis, "
            "e.g. (1, 784)."
        )
    return net.init(key, shape, dtype)
