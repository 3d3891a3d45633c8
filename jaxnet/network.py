"""Any network, differentiable three ways from ONE set of rules: `network_fn`, `network_loss`.

  "fused"    the whole network (with its loss, for `network_loss`) is ONE `jax.custom_vjp`,
             made by `jaxnet.vjp`: its forward runs the layers' forward rules and keeps
             their residuals; its backward is the loss's backward followed by the
             network's, layer by layer in reverse (lesson 003's `Model.backward`).
  "ops"      each leaf layer is its own `jax.custom_vjp`, made from the same rules, and
             JAX composes them (and the loss's, made the same way).
  "autodiff" the plain forward, differentiated by JAX: the oracle the others are held to.

State (batch_norm's running statistics) is not differentiable in any mode: its gradient
is zero, and "autodiff" stops it so that the three modes agree.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxnet import _checks, layers, losses, vjp
from jaxnet.layers import Layer
from jaxnet.typing import Array, ArrayLike, PyTree

GRADS = _checks.GRADS


def _ops_leaf(layer: Layer) -> Callable:
    """A leaf as its own custom_vjp, with `layers.run`'s leaf signature."""

    def apply(params, state, x, *, train=False, key=None):
        return vjp.layer(layer, train=train)(params, state, x, key)

    return apply


def _plain_leaf(layer: Layer) -> Callable:
    def apply(params, state, x, *, train=False, key=None):
        return layers.plain(layer, params, jax.lax.stop_gradient(state), x, train=train, key=key)

    return apply


def network_fn(net: Layer, *, grad: str = "fused", train: bool = True) -> Callable:
    """The network as a function for your own model and loss: f(params, state, x, key=None)
    -> (out, new_state).

    With grad="fused" the whole network is ONE `jax.custom_vjp` whose backward chains the
    layers' hand-derived rules; "ops" makes each leaf layer its own custom_vjp; "autodiff"
    lets JAX differentiate the plain forward. Differentiable in params and in a float x, so
    it can sit between your own layers; works under jit, vmap, grad of grad, lax.scan and
    jax.checkpoint. Forward-mode autodiff (jvp) cannot pass a custom_vjp.

    Args:
      net: a `jaxnet.layers.Layer`, usually a `serial` network.
      grad: "fused", "ops" or "autodiff".
      train: train mode (batch statistics, dropout) or eval mode, fixed for f.

    Returns:
      f(params, state, x, key=None) -> (out, new_state); key is needed by dropout in train
      mode. new_state carries no gradient.
    """
    layers.core.require_layer(net)
    _checks.one_of(grad, GRADS, "grad")
    leaf = _ops_leaf if grad == "ops" else _plain_leaf

    def f(params, state, x, key=None):
        check_params(net, params, x, shapes=False)  # at trace time: a misfit named, not JAX's
        if grad == "fused":
            return vjp.layer(net, train=train)(params, state, x, key)
        out, new_state = layers.run(net, leaf, params, state, jnp.asarray(x), train=train, key=key)
        return out, jax.lax.stop_gradient(new_state)

    return f


def leaf_op(layer: Layer, *, x_float: bool = True) -> Callable:
    """A layer as its own custom_vjp: apply(params, state, x, *, train=False, key=None) ->
    (out, new_state). x_float=False gives x no cotangent (integer ids)."""

    def apply(params, state, x, *, train=False, key=None):
        return vjp.layer(layer, train=train, x_grad=x_float)(params, state, x, key)

    return apply


def apply_ops(net: Layer, params: PyTree, state: PyTree, x: ArrayLike, *, train=False, key=None):
    """(out, new_state) with each leaf layer its own custom_vjp: the "ops" mode's forward."""
    return layers.run(net, _ops_leaf, params, state, jnp.asarray(x), train=train, key=key)


def _output_spec(net: Layer, params, state, x, *, train: bool, key) -> jax.ShapeDtypeStruct:
    """The network's output shape and dtype for x, by tracing its forward at no cost
    (shape and dtype errors surface here, naming the layer)."""
    return jax.eval_shape(
        lambda p, s, x, k: layers.apply(net, p, s, x, train=train, key=k)[0], params, state, x, key
    )


def _leaves(tree) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"params" + jax.tree_util.keystr(path): leaf for path, leaf in flat}


def _params_like_init(net: Layer, params, x) -> dict | None:
    """The leaves net.init gives for x's shape and params' dtype (None if init refuses x)."""
    floats = [p for p in jax.tree_util.tree_leaves(params) if vjp._is_float(p)]
    dtype = jnp.result_type(floats[0]) if floats else jnp.float32
    try:
        spec = jax.eval_shape(lambda k: net.init(k, jnp.shape(x), dtype)[1], jax.random.key(0))
    except Exception:  # noqa: BLE001 - the forward's trace names what is wrong with x
        return None
    return _leaves(spec)


def check_params(net: Layer, params: PyTree, x: ArrayLike, *, shapes: bool = True) -> None:
    """Checks params against what net.init makes for x: the same keys, shapes and dtypes.

    Runs at trace time (static shapes only), so it costs nothing under jit. Raises
    ValueError (structure, shape) or TypeError (dtype) naming the entry and the fix;
    shapes=False checks the keys alone.
    """
    want = _params_like_init(net, params, x)
    if want is None:
        return
    got = _leaves(params)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"{net.name}: params do not fit the network: missing {missing}, unexpected {extra}; "
            "build params with the network's init (layers.init(net, key, input_shape))."
        )
    for name, spec in want.items() if shapes else ():
        _check_leaf(net, name, got[name], spec, x)


def _check_leaf(net: Layer, name: str, leaf, spec, x) -> None:
    shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
    if shape != spec.shape:
        raise ValueError(
            f"{net.name}: {name} has shape {shape}; the network expects {spec.shape} for "
            f"input of shape {jnp.shape(x)}. Build params with the network's init."
        )
    if dtype != spec.dtype:
        raise TypeError(
            f"{net.name}: {name} has dtype {dtype}; every parameter must share one floating "
            f"dtype ({spec.dtype} here); cast with .astype({str(spec.dtype)!r})."
        )


def check_call(net: Layer, params, state, x, y, loss, label_smoothing=0.0, *, train=True, key=None):
    """The checks `network_loss` makes, at trace time: (the Loss, the output's spec)."""
    layers.core.require_layer(net)
    rule = losses.get(loss, label_smoothing)
    _checks.nonempty_batch(x, f"network_loss {rule.name!r}")
    if key is not None:
        _checks.prng_key(key, "network_loss")
    check_params(net, params, x, shapes=False)  # the keys first: a missing one fails the trace
    out = _output_spec(net, params, state, x, train=train, key=key)
    check_params(net, params, x)
    rule.check(out.shape, y, out.dtype, f"network_loss {rule.name!r}")
    return rule, out


def network_loss(
    net: Layer,
    params: PyTree,
    state: PyTree,
    x: ArrayLike,
    y: ArrayLike,
    *,
    loss: "str | losses.Loss",
    grad: str = "fused",
    train: bool = True,
    key=None,
    label_smoothing: float = 0.0,
) -> tuple[Array, PyTree]:
    """The loss of net(x) against y, and the network's new state; differentiable three ways.

    Args:
      net: a `jaxnet.layers.Layer`, usually a `serial` network.
      params, state: from `net.init`.
      x: the input batch (float, or integer ids for a network that starts with embedding).
      y: float targets for "mse"/"sum_squares" ([n] fits an output [n, 1]); integer
        labels for "cross_entropy".
      loss: a name ("mse", "sum_squares", "cross_entropy") or a `jaxnet.losses.Loss`.
      grad: "fused", "ops" or "autodiff" (see the module docstring).
      train: train mode (batch statistics, dropout) or eval mode.
      key: a PRNG key, needed by dropout in train mode.
      label_smoothing: for loss="cross_entropy" given by name.

    Returns:
      (loss, new_state). Differentiate in params with `jax.grad(..., has_aux=True)`.
    """
    _checks.one_of(grad, GRADS, "grad")
    x, y = jnp.asarray(x), jnp.asarray(y)
    rule, out = check_call(net, params, state, x, y, loss, label_smoothing, train=train, key=key)
    if grad == "fused":
        call = vjp.network_loss(net, rule, train=train, out_shape=out.shape)
        return call(params, state, x, y, key)
    out, new_state = network_fn(net, grad=grad, train=train)(params, state, x, key)
    value = vjp.loss(rule)(out, y) if grad == "ops" else rule.value(out, y)
    return value, new_state
