"""The one place that turns rules into `jax.custom_vjp` functions.

Everything in jaxnet that has a hand VJP gets it here (`jaxnet.ops` registers its single
ops itself, three definitions side by side):

  `from_rules`    forward(*args) -> (out, residual) and backward(residual, g) -> cotangents,
                  tied into one custom_vjp: the factory the others use.
  `layer`         a layer as ONE custom_vjp of (params, state, x, key) -> (out, new_state):
                  a leaf (the "ops" mode, the checker's hand VJP) or a whole network (the
                  "fused" `network_fn`), whose backward chains the layers' rules by hand.
  `network_loss`  a network and its loss as ONE custom_vjp of (params, state, x, y, key)
                  -> (loss, new_state): the loss's backward, then the network's.
  `loss`          a loss as its own custom_vjp of (pred, target) -> value.

The plumbing: the layer, the loss and `train` are closed over, never traced (a Layer is a
NamedTuple of functions, which JAX would treat as a pytree). `state` and `key` are inputs
with None cotangents: state is not differentiable. A float `x` or `y` gets its true
cotangent, integer ids or labels None. `new_state` is an output whose cotangent is
ignored, so the forward runs once.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def from_rules(forward: Callable, backward: Callable) -> Callable:
    """A `jax.custom_vjp` function whose value is forward(*args)[0].

    Args:
      forward: (*args) -> (out, residual); the residual is what backward needs.
      backward: (residual, g) -> a tuple with one cotangent (or None) per argument.
    """

    @jax.custom_vjp
    def f(*args):
        return forward(*args)[0]

    f.defvjp(forward, backward)
    return f


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def layer(rules, *, train: bool, x_grad: bool | None = None) -> Callable:
    """(params, state, x, key=None) -> (out, new_state), ONE custom_vjp from a Layer's rules.

    Args:
      rules: a `jaxnet.layers.Layer`, a leaf or a whole network.
      train: train or eval mode, fixed.
      x_grad: whether x gets a cotangent; default: when x is floating.
    """

    def forward(params, state, x, key):
        out, residual, new_state = rules.forward(params, state, x, train=train, key=key)
        return (out, new_state), (params, residual)

    def call(params, state, x, key=None):
        x = jnp.asarray(x)
        wants_dx = _is_float(x) if x_grad is None else x_grad

        def backward(saved, cotangents):
            params, residual = saved
            g, _ = cotangents  # the new state's cotangent is ignored
            dparams, dx = rules.backward(params, residual, g)
            return dparams, None, dx if wants_dx else None, None

        return from_rules(forward, backward)(params, state, x, key)

    return call


def network_loss(net, rule, *, train: bool, out_shape) -> Callable:
    """(params, state, x, y, key=None) -> (loss, new_state), ONE custom_vjp.

    Args:
      net: a `jaxnet.layers.Layer`.
      rule: a `jaxnet.losses.Loss`.
      train: train or eval mode, fixed.
      out_shape: the network's output shape for x (the loss's dpred is reshaped to it).
    """

    def forward(params, state, x, y, key):
        out, residuals, new_state = net.forward(params, state, x, train=train, key=key)
        value, loss_residual = rule.forward(out, y)
        return (value, new_state), (params, residuals, loss_residual)

    def call(params, state, x, y, key=None):
        x, y = jnp.asarray(x), jnp.asarray(y)

        def backward(saved, cotangents):
            params, residuals, loss_residual = saved
            g, _ = cotangents
            dpred, dy = rule.backward(loss_residual, g)
            grads, dx = net.backward(params, residuals, dpred.reshape(out_shape))
            dx = dx if _is_float(x) else None
            dy = dy.reshape(y.shape) if _is_float(y) and dy is not None else None
            return grads, None, dx, dy, None

        return from_rules(forward, backward)(params, state, x, y, key)

    return call


def loss(rule) -> Callable:
    """(pred, target) -> value, ONE custom_vjp from a `jaxnet.losses.Loss`'s rules."""

    def call(pred, target):
        pred, target = jnp.asarray(pred), jnp.asarray(target)

        def backward(residual, g):
            dpred, dtarget = rule.backward(residual, g)
            dtarget = None if dtarget is None else dtarget.reshape(target.shape)
            return dpred.reshape(pred.shape), dtarget

        return from_rules(rule.forward, backward)(pred, target)

    return call
