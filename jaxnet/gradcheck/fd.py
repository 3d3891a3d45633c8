"""Central finite differences of <u, f(args)> along one random direction per leaf.

For every floating argument leaf i and sign s, f is evaluated at args + s h_i v_i (every
other leaf unchanged) inside one `lax.map`: one compiled forward for all the leaves.
In float64 when f accepts float64 arguments (closed-over float32 arrays promote, exactly);
when it refuses (say a dtype check against a closed-over target), in the arguments' dtype
with a step suited to it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import tolerances


def _inner(u_leaves, out):
    pairs = zip(u_leaves, jax.tree_util.tree_leaves(out))
    return sum(jnp.sum(u.astype(o.dtype) * o) for u, o in pairs if u is not None)


@functools.lru_cache(maxsize=64)
def _program(f):
    def differences(args, u_leaves, v_leaves, steps, coefs):
        leaves, treedef = jax.tree_util.tree_flatten(args)

        def value(coef):
            moved = [
                x if v is None else x + (c * h).astype(x.dtype) * v
                for x, v, c, h in zip(leaves, v_leaves, coef, steps)
            ]
            return _inner(u_leaves, f(*treedef.unflatten(moved)))

        return jax.lax.map(value, coefs)

    return jax.jit(differences)


def _cast(leaves, dtype):
    return [None if x is None else jnp.asarray(x, dtype or x.dtype) for x in leaves]


def _steps(leaves, v_leaves, relative):
    """Per leaf: h = relative step * the leaf's scale (at least 1)."""
    steps = []
    for x, v in zip(leaves, v_leaves):
        scale = max(1.0, float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))) if v is not None else 0.0
        steps.append(relative * scale)
    return steps


def directional(f, args, u_leaves, v_leaves):
    """(fd per leaf (None where not floating), dtype name the differences ran in or None)."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    which = [i for i, v in enumerate(v_leaves) if v is not None]
    coefs = np.zeros((2 * len(which), len(leaves)))
    for k, i in enumerate(which):
        coefs[2 * k, i], coefs[2 * k + 1, i] = 1.0, -1.0
    try:
        with jax.enable_x64(True):
            wide = treedef.unflatten(
                [jnp.asarray(x, jnp.float64) if v is not None else x for x, v in zip(leaves, v_leaves)]
            )
            steps = _steps(leaves, v_leaves, tolerances.FD64_STEP)
            values = _program(f)(wide, _cast(u_leaves, jnp.float64), _cast(v_leaves, jnp.float64),
                                 steps, coefs)  # fmt: skip
            values, native = np.asarray(values, np.float64), None
    except (TypeError, ValueError) as e:
        native = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        relative = max(tolerances.for_dtype(v.dtype).native_step for v in v_leaves if v is not None)
        steps = _steps(leaves, v_leaves, relative)
        values = np.asarray(_program(f)(args, u_leaves, v_leaves, steps, coefs), np.float64)
    fd = [None] * len(leaves)
    for k, i in enumerate(which):
        fd[i] = (values[2 * k] - values[2 * k + 1]) / (2 * steps[i])
    return fd, native
