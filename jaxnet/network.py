"""`network_loss`: any network's loss, differentiable three ways from ONE set of rules.

  "fused"    the whole network plus its loss is ONE `jax.custom_vjp`. Its forward runs the
             layers' forward rules and keeps their residuals; its backward is the loss's
             backward followed by the network's, layer by layer in reverse (lesson 003's
             `Model.backward`).
  "ops"      each leaf layer is its own `jax.custom_vjp`, made from the same rules, and
             JAX composes them (and the loss's, made the same way).
  "autodiff" the plain forward, differentiated by JAX: the oracle the others are held to.

How the plumbing goes: `net`, the loss and `train` are closed over, never traced (a Layer
is a NamedTuple of functions, which JAX would treat as a pytree). `state`, `key`, `x` and
`y` are ordinary inputs of the custom_vjp: `state` and `key` get None cotangents, a float
`x` or `y` gets its true cotangent and integer ids or labels None; `new_state` is an output
whose cotangent is ignored, so the forward runs once.
"autodiff" stops the gradient of `new_state` so that the three modes agree.
"""

import jax
import jax.numpy as jnp

from jaxnet import _checks, layers, losses
from jaxnet.layers import Layer
from jaxnet.typing import Array, ArrayLike, PyTree

GRADS = _checks.GRADS


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _fused(net: Layer, loss: losses.Loss, *, train: bool, out_shape, x_float: bool, y_shape):
    """(params, state, x, y, key) -> (loss, new_state) as ONE custom_vjp made from the rules.

    The static facts the backward needs (the output's shape, whether x and y take
    cotangents) are closed over, as `net`, `loss` and `train` are.
    """
    y_float = y_shape is not None

    def forward(params, state, x, y, key):
        out, residuals, new_state = net.forward(params, state, x, train=train, key=key)
        value, loss_residual = loss.forward(out, y)
        return (value, new_state), (params, residuals, loss_residual)

    @jax.custom_vjp
    def call(params, state, x, y, key):
        return forward(params, state, x, y, key)[0]

    def call_bwd(saved, cotangents):
        params, residuals, loss_residual = saved
        g, _ = cotangents  # the new state's cotangent is ignored
        dpred, dy = loss.backward(loss_residual, g)
        grads, dx = net.backward(params, residuals, dpred.reshape(out_shape))
        dx = dx if x_float else None
        dy = dy.reshape(y_shape) if y_float else None
        return grads, None, dx, dy, None

    call.defvjp(forward, call_bwd)
    return call


def leaf_op(layer: Layer, *, x_float: bool = True):
    """A leaf layer as its own custom_vjp of (params, state, x, key) -> (out, new_state)."""

    def forward(params, state, x, key, train):
        out, residual, new_state = layer.forward(params, state, x, train=train, key=key)
        return (out, new_state), (params, residual)

    def make(train):
        @jax.custom_vjp
        def call(params, state, x, key):
            return forward(params, state, x, key, train)[0]

        def call_bwd(saved, cotangents):
            params, residual = saved
            g, _ = cotangents
            dparams, dx = layer.backward(params, residual, g)
            return dparams, None, dx if x_float else None, None

        call.defvjp(lambda p, s, x, k: forward(p, s, x, k, train), call_bwd)
        return call

    def apply(params, state, x, *, train=False, key=None):
        return make(train)(params, state, x, key)

    return apply


def _ops_leaf(layer: Layer):
    def apply(params, state, x, *, train=False, key=None):
        return leaf_op(layer, x_float=_is_float(x))(params, state, x, train=train, key=key)

    return apply


def apply_ops(net: Layer, params: PyTree, state: PyTree, x: ArrayLike, *, train=False, key=None):
    """(out, new_state) with each leaf layer its own custom_vjp: the "ops" mode's forward."""
    return layers.run(net, _ops_leaf, params, state, jnp.asarray(x), train=train, key=key)


def _check_net(net) -> None:
    if not isinstance(net, Layer):
        raise TypeError(
            f"net must be a jaxnet.layers.Layer (e.g. layers.serial(...)), got "
            f"{type(net).__name__}."
        )


def _output_spec(net: Layer, params, state, x, *, train: bool, key) -> jax.ShapeDtypeStruct:
    """The network's output shape and dtype for x, by tracing its forward at no cost
    (shape and dtype errors surface here, naming the layer)."""
    return jax.eval_shape(
        lambda p, s, x, k: layers.apply(net, p, s, x, train=train, key=k)[0], params, state, x, key
    )


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
    _check_net(net)
    _checks.one_of(grad, GRADS, "grad")
    rule = losses.get(loss, label_smoothing)
    x, y = jnp.asarray(x), jnp.asarray(y)
    out = _output_spec(net, params, state, x, train=train, key=key)
    rule.check(out.shape, y, out.dtype, f"network_loss {rule.name!r}")
    return _checked_loss(net, params, state, x, y, rule, out.shape, grad=grad, train=train, key=key)


def _checked_loss(net, params, state, x, y, rule, out_shape, *, grad, train=True, key=None):
    """`network_loss` after its checks, for a caller that has made them (`mlp_loss`):
    `rule` is a `Loss` and `out_shape` the network's output shape for x."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if grad == "fused":
        call = _fused(net, rule, train=train, out_shape=tuple(out_shape), x_float=_is_float(x),
                     y_shape=y.shape if _is_float(y) else None)  # fmt: skip
        return call(params, state, x, y, key)
    if grad == "ops":
        out, new_state = apply_ops(net, params, state, x, train=train, key=key)
        return losses.as_op(rule)(out, y), new_state
    out, new_state = layers.apply(net, params, state, x, train=train, key=key)
    return rule.value(out, y), jax.lax.stop_gradient(new_state)
