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


def _shape_dtype(x) -> tuple[tuple[int, ...], np.dtype]:
    """Of an array, a `jax.ShapeDtypeStruct` or a Python number."""
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return tuple(x.shape), np.dtype(x.dtype)
    return np.shape(x), np.dtype(jnp.result_type(x))


def draw(rng: np.random.Generator, tree: PyTree, batch: tuple[int, ...] = ()) -> list:
    """Standard normal numpy leaves like tree's (None for non-floating ones), flat.

    Drawn on the host: threefry inside the check's program was most of its compile time.
    """
    found = []
    for x in jax.tree_util.tree_leaves(tree):
        shape, dtype = _shape_dtype(x)
        floating = jnp.issubdtype(dtype, jnp.inexact)
        found.append(rng.standard_normal((*batch, *shape)).astype(dtype) if floating else None)
    return found


def unflat(like: PyTree, leaves: list, batch: tuple[int, ...] = ()) -> PyTree:
    """like's tree holding `leaves` in like's dtypes, None as float0 zeros (autodiff's
    cotangent and tangent of a non-floating leaf)."""
    flat_like, treedef = jax.tree_util.tree_flatten(like)
    return treedef.unflatten([
        np.zeros((*batch, *_shape_dtype(x)[0]), jax.dtypes.float0) if leaf is None
        else jnp.asarray(leaf, _shape_dtype(x)[1])
        for leaf, x in zip(leaves, flat_like)
    ])  # fmt: skip


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
