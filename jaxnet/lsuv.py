"""LSUV for any serial network: each dense layer rescaled, in forward order, to unit std.

Layer-sequential unit-variance init (Mishkin and Matas 2015; fast.ai lesson 11): walk the
network on a data batch, and before each dense layer's output moves on, divide its weights
by the std of that output until it is 1. Later layers see the already-rescaled earlier
ones. `jaxnet.initializers.lsuv` runs this for a bare MLP params list, with any activation.
"""

import jax
import jax.numpy as jnp

from jaxnet import layers
from jaxnet.typing import ArrayLike, PyTree


def _is_dense(node) -> bool:
    return isinstance(node, dict) and "w" in node


def unit_std(layer: layers.Layer, params, state, x, *, tol: float, max_iters: int) -> dict:
    """A dense layer's params, w divided by its output's std on x until |std - 1| < tol."""
    for _ in range(max_iters):
        std = float(jnp.std(layer.forward(params, state, x)[0]))
        if std == 0 or abs(std - 1.0) < tol:
            break
        params = {**params, "w": params["w"] / std}
    return params


def rescale(
    net: layers.Layer,
    params: PyTree,
    state: PyTree,
    x: ArrayLike,
    *,
    tol: float = 0.01,
    max_iters: int = 10,
) -> PyTree:
    """params with every dense layer's w rescaled so its output has unit std on the batch x.

    Runs eagerly (not under jit): each rescaling reads a std. Eval mode, so batch_norm uses
    its running statistics and dropout is the identity. Biases are kept.

    Args:
      net: a network of `jaxnet.layers` (serial, residual, mlp_network, ...).
      params, state: from net.init.
      x: a data batch, e.g. 512 training examples.
      tol, max_iters: stop when |std - 1| < tol, or after max_iters rescalings per layer.
    """
    fitted = []

    def leaf_apply(layer):
        def apply(p, s, x, *, train=False, key=None):
            if layer.name == "dense":
                p = unit_std(layer, p, s, x, tol=tol, max_iters=max_iters)
                fitted.append(p)
            return layers.plain(layer, p, s, x, train=train, key=key)

        return apply

    layers.run(net, leaf_apply, params, state, jnp.asarray(x), train=False)
    # The k-th dense layer met on the walk owns the k-th {"w": ...} of the params tree:
    # serial and residual keep their params in the order they run their layers.
    leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=_is_dense)
    positions = [i for i, leaf in enumerate(leaves) if _is_dense(leaf)]
    if len(positions) != len(fitted):
        raise ValueError(
            f"lsuv: the walk met {len(fitted)} dense layers but params hold {len(positions)} "
            "{'w': ...} entries; params must come from this net's init."
        )
    for i, p in zip(positions, fitted):
        leaves[i] = p
    return treedef.unflatten(leaves)
