"""A jaxnet network inside flax.nnx or equinox: `nnx_module`, `eqx_module`, `eqx_layer`.

Both wrap `jaxnet.network_fn` (the whole network one `jax.custom_vjp`) so that each
framework sees what it expects:

  nnx_module   an `nnx.Module`: one `nnx.Param` per parameter array and one `nnx.BatchStat`
               per running statistic, in `nnx.List`/`nnx.Dict` containers shaped like
               jaxnet's lists and dicts. A Variable holds ONE array: nnx's state machinery
               (which `nnx.Optimizer` uses to store optax's moments) rewrites a list held in
               a single Param as an nnx State, and the second update then fails.
  eqx_module   an `eqx.Module` whose inexact arrays are exactly the params, its running
               statistics in an `eqx.nn.State` behind an `eqx.nn.StateIndex`, as
               `eqx.nn.make_with_state` returns. Statistics among the trainable leaves
               would get zero gradients, optax moments, and adamw's weight decay.
  eqx_layer    the same module with its initial state inside, to sit in your own
               eqx.Module (as `eqx.nn.BatchNorm` does) before `eqx.nn.make_with_state`.

flax and equinox are optional: each is imported when its function is first called
(`pip install jaxnet-handvjp[flax]`, `pip install jaxnet-handvjp[equinox]`).
"""

import functools
import importlib

import jax
import jax.numpy as jnp

from jaxnet import _checks, layers, network
from jaxnet.layers import Layer
from jaxnet.typing import DTypeLike, PyTree

__all__ = ["eqx_layer", "eqx_module", "nnx_module"]


def _require(module: str, extra: str):
    """Imports an optional dependency, or says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"jaxnet.interop needs {module.split('.')[0]}: pip install jaxnet-handvjp[{extra}]"
        ) from e


def _init(net: Layer, key, input_shape, grad: str, dtype: DTypeLike):
    """(params, state) from net's init, with net and grad checked first."""
    layers.core.require_layer(net)
    _checks.one_of(grad, network.GRADS, "grad")
    _, params, state = layers.init(net, key, input_shape, dtype)
    return params, state


# ------------------------------------------------------------------------------ flax.nnx


def _wrap(nnx, tree, kind):
    """jaxnet's dicts and lists as nnx.Dict and nnx.List, each array its own `kind` Variable."""
    if isinstance(tree, dict):
        return nnx.Dict({k: _wrap(nnx, v, kind) for k, v in tree.items()})
    if isinstance(tree, (list, tuple)):
        return nnx.List([_wrap(nnx, v, kind) for v in tree])
    return kind(tree)


def _variables(nnx, node) -> list:
    """node's Variables in the order jax.tree.leaves lists the tree `_wrap` was given."""
    if isinstance(node, nnx.Dict):
        return [v for k in sorted(node.keys()) for v in _variables(nnx, node[k])]
    if isinstance(node, nnx.List):
        return [v for item in node for v in _variables(nnx, item)]
    return [node]


@functools.cache
def _nnx_class(nnx):
    """The Module class, made once: flax is imported only when it is first asked for."""

    class Network(nnx.Module):
        """A jaxnet network as an nnx.Module: params as nnx.Param, statistics as nnx.BatchStat."""

        def __init__(self, net: Layer, params: PyTree, state: PyTree, grad: str):
            self.net, self.grad = net, grad
            self.params_def = jax.tree.structure(params)
            self.state_def = jax.tree.structure(state)
            self.params = _wrap(nnx, params, nnx.Param)
            self.state = _wrap(nnx, state, nnx.BatchStat)

        def as_trees(self) -> tuple[PyTree, PyTree]:
            """(params, state) as jaxnet's plain pytrees, for `jaxnet.network_fn`."""
            params = [v[...] for v in _variables(nnx, self.params)]
            state = [v[...] for v in _variables(nnx, self.state)]
            return self.params_def.unflatten(params), self.state_def.unflatten(state)

        def __call__(self, x, *, train: bool, key=None):
            """The network's output for x; in train mode its running statistics move."""
            f = network.network_fn(self.net, grad=self.grad, train=train)
            out, new_state = f(*self.as_trees(), x, key)
            if train:  # eval mode leaves the state as it is
                for var, value in zip(_variables(nnx, self.state), jax.tree.leaves(new_state)):
                    var[...] = value
            return out

    Network.__qualname__ = "Network"  # repr and error messages, not "_nnx_class.<locals>..."
    return Network


def nnx_module(net: Layer, input_shape, *, rngs, grad: str = "fused", dtype=jnp.float32):
    """The network as a flax `nnx.Module`, trainable with nnx.Optimizer(..., wrt=nnx.Param).

    Args:
      net: a `jaxnet.layers.Layer`, usually a `serial` network.
      input_shape: the input's shape, batch axis included, e.g. (1, 64).
      rngs: an `nnx.Rngs`; its `params` stream draws the init key.
      grad: "fused", "ops" or "autodiff", as in `jaxnet.network_fn`.
      dtype: the params' and statistics' floating dtype.

    Returns:
      A module m with m(x, *, train, key=None) -> out (key for dropout in train mode), which
      writes the new running statistics back to m.state; m.params[i]["w"] is layer i's
      weight, and m.as_trees() gives (params, state) as jaxnet's pytrees.
    """
    nnx = _require("flax.nnx", "flax")
    params, state = _init(net, rngs.params(), input_shape, grad, dtype)
    return _nnx_class(nnx)(net, params, state, grad)


# ------------------------------------------------------------------------------- equinox


@functools.cache
def _eqx_class(eqx):
    """The Module class, made once: equinox is imported only when it is first asked for."""

    class Network(eqx.Module):
        """A jaxnet network as an eqx.Module: params as fields, statistics in eqx.nn.State."""

        params: PyTree
        index: eqx.nn.StateIndex
        net: Layer = eqx.field(static=True)
        grad: str = eqx.field(static=True)

        def __init__(self, net: Layer, params: PyTree, state: PyTree, grad: str):
            self.params, self.index = params, eqx.nn.StateIndex(state)
            self.net, self.grad = net, grad

        def __call__(self, x, state, *, train: bool, key=None):
            """(the network's output for x, state with the new running statistics)."""
            f = network.network_fn(self.net, grad=self.grad, train=train)
            out, new_state = f(self.params, state.get(self.index), x, key)
            if not train:  # as eqx.nn.BatchNorm: the state stays usable for the next call
                return out, state
            return out, state.set(self.index, new_state)

    Network.__qualname__ = "Network"
    return Network


def eqx_layer(net: Layer, input_shape, *, key, grad: str = "fused", dtype=jnp.float32):
    """The network as an equinox layer that holds its initial state, for your own eqx.Module.

    As with `eqx.nn.BatchNorm`, build the model that holds it with
    `eqx.nn.make_with_state(YourModel)(...)`, which moves the state into an `eqx.nn.State`.
    Arguments as `eqx_module`'s; call it as the module `eqx_module` returns.
    """
    eqx = _require("equinox", "equinox")
    params, state = _init(net, key, input_shape, grad, dtype)
    return _eqx_class(eqx)(net, params, state, grad)


def eqx_module(net: Layer, input_shape, *, key, grad: str = "fused", dtype=jnp.float32):
    """The network as an equinox Module and its state, as `eqx.nn.make_with_state` returns.

    Args:
      net: a `jaxnet.layers.Layer`, usually a `serial` network.
      input_shape: the input's shape, batch axis included, e.g. (1, 64).
      key: the PRNG key for net's init.
      grad: "fused", "ops" or "autodiff", as in `jaxnet.network_fn`.
      dtype: the params' and statistics' floating dtype.

    Returns:
      (module, state): module(x, state, *, train, key=None) -> (out, state). The module's
      inexact arrays are exactly net's params (module.params); the running statistics are
      state.get(module.index), never trainable leaves. Inside your own eqx.Module, use
      `eqx_layer` instead.
    """
    eqx = _require("equinox", "equinox")
    make = eqx.nn.make_with_state(eqx_layer)
    return make(net, input_shape, key=key, grad=grad, dtype=dtype)
