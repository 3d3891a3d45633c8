"""Pytree helpers of the battery: floating leaves, random draws, leaf paths."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.typing import PyTree


def is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def flat(tree: PyTree) -> list:
    """The leaves of a tree, non-floating ones (integers, float0) as None."""
    return [x if is_float(x) else None for x in jax.tree_util.tree_leaves(tree)]


def draw(key, tree: PyTree, batch: tuple[int, ...] = ()) -> PyTree:
    """Standard normal leaves like tree's (float0 zeros for non-floating ones)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([_normal(k, x, batch) for k, x in zip(keys, leaves)])


def _normal(key, x, batch):
    shape = (*batch, *jnp.shape(x))
    if is_float(x):
        return jax.random.normal(key, shape, jnp.result_type(x))
    return np.zeros(shape, jax.dtypes.float0)


def zeros_like(tree):
    return jax.tree_util.tree_map(lambda x: jnp.zeros_like(x) if is_float(x) else x, tree)


def add(a, b, scale=1.0):
    return jax.tree_util.tree_map(lambda x, y: x + scale * y if is_float(x) else x, a, b)


def scale(a, s):
    return jax.tree_util.tree_map(lambda x: s * x if is_float(x) else x, a)


def signature(args: PyTree):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)


def vjp_of(fn):
    """(args, u) -> the cotangents of fn's arguments."""
    return lambda args, u: jax.vjp(fn, *args)[1](u)


def paths(tree):
    flat_with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat_with_path], [x for _, x in flat_with_path]
