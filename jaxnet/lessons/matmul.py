"""Lesson 003's matmul ladder: from three Python loops to one library call.

Each rung computes a @ b for a [m, k] and b [k, n]; each is checked against `jnp.matmul`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.typing import Array, ArrayLike


def python_loops(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Three nested Python loops over scalars: result[i, j] += a[i, k] * b[k, j].

    Runs on host numpy arrays: JAX would dispatch (or, under jit, unroll) every scalar op.
    """
    a, b = np.asarray(a), np.asarray(b)
    (m, k), n = a.shape, b.shape[1]
    out = np.zeros((m, n), a.dtype)
    for i in range(m):
        for j in range(n):
            for p in range(k):
                out[i, j] += a[i, p] * b[p, j]
    return out


def fori_loops(a: ArrayLike, b: ArrayLike) -> Array:
    """The same triple loop as `lax.fori_loop`s: compiled, but still one scalar at a time."""
    (m, k), n = jnp.shape(a), jnp.shape(b)[1]

    def inner(i, j):
        return jax.lax.fori_loop(
            0, k, lambda p, acc: acc + a[i, p] * b[p, j], jnp.zeros((), a.dtype)
        )

    def row(i, out):
        return jax.lax.fori_loop(0, n, lambda j, out: out.at[i, j].set(inner(i, j)), out)

    return jax.lax.fori_loop(0, m, row, jnp.zeros((m, n), jnp.result_type(a, b)))


def row_times_column(a: ArrayLike, b: ArrayLike) -> Array:
    """The innermost loop replaced: result[i, j] = sum(a[i, :] * b[:, j])."""
    rows = [
        jnp.stack([jnp.sum(a[i, :] * b[:, j]) for j in range(b.shape[1])])
        for i in range(a.shape[0])
    ]
    return jnp.stack(rows)


def broadcast(a: ArrayLike, b: ArrayLike) -> Array:
    """One loop left: result[i] = (a[i][:, None] * b).sum(0), a column broadcast over b."""
    return jnp.stack([jnp.sum(a[i][:, None] * b, axis=0) for i in range(a.shape[0])])


def einsum(a: ArrayLike, b: ArrayLike) -> Array:
    """No loops: 'ik,kj->ij'."""
    return jnp.einsum("ik,kj->ij", a, b)


def matmul(a: ArrayLike, b: ArrayLike) -> Array:
    """The library call."""
    return jnp.matmul(a, b)


# name -> (function, the jit settings worth timing). The Python loops cannot be jitted
# (jit would unroll every scalar op); an eager fori_loop is compiled anyway.
LADDER = {
    "python_loops": (python_loops, (False,)),
    "fori_loops": (fori_loops, (True,)),
    "row_times_column": (row_times_column, (False, True)),
    "broadcast": (broadcast, (False, True)),
    "einsum": (einsum, (False, True)),
    "matmul": (matmul, (False, True)),
}
