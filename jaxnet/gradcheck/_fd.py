"""Central finite differences of <u, f(args)> along one random direction per leaf.

For every floating argument leaf i and sign s, f is evaluated at args + s h_i v_i (every
other leaf unchanged) inside one `lax.map`: one forward in the program for all leaves.
Traced inside the check's program, in a float64 region (`jax.enable_x64` while tracing):
closed-over float32 arrays promote, exactly. Where f refuses float64 arguments (a dtype
check against a closed-over target), in the arguments' own dtype with a step suited to it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import tolerances


def _inner(u_leaves, out):
    pairs = zip(u_leaves, jax.tree_util.tree_leaves(out))
    return sum(jnp.sum(u.astype(o.dtype) * o) for u, o in pairs if u is not None)


def _differences(f, leaves, treedef, u_leaves, v_leaves, relative):
    which = [i for i, v in enumerate(v_leaves) if v is not None]
    coefs = np.zeros((2 * len(which), len(leaves)))
    for k, i in enumerate(which):
        coefs[2 * k, i], coefs[2 * k + 1, i] = 1.0, -1.0
    steps = [
        None if v is None else relative * jnp.maximum(1.0, jnp.sqrt(jnp.mean(jnp.square(x))))
        for x, v in zip(leaves, v_leaves)
    ]

    def value(coef):
        moved = [
            x if v is None else x + (c * h).astype(x.dtype) * v
            for x, v, c, h in zip(leaves, v_leaves, coef, steps)
        ]
        return _inner(u_leaves, f(*treedef.unflatten(moved)))

    values = jax.lax.map(value, jnp.asarray(coefs, leaves[which[0]].dtype))
    fd, k = [], 0
    for h in steps:
        fd.append(None if h is None else (values[2 * k] - values[2 * k + 1]) / (2 * h))
        k += h is not None
    return fd


def _float64(f, leaves, treedef, u_leaves, v_leaves, step):
    with jax.enable_x64(True):
        wide = [x if v is None else jnp.asarray(x, jnp.float64) for x, v in zip(leaves, v_leaves)]
        # float64 values leave the program as they are
        return _differences(f, wide, treedef, _wide(u_leaves), _wide(v_leaves), step)


def _wide(leaves):
    return [None if x is None else jnp.asarray(x, jnp.float64) for x in leaves]


def directional(f, args, u_leaves, v_leaves, *, float64=True, step=tolerances.FD64_STEP):
    """(per leaf fd of <u, f> along v (None where not floating), why not float64 or None).

    `step` is the float64 step, relative to each argument's scale.

    Call while tracing: the float64 part runs inside `jax.enable_x64(True)`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(args)
    native = "its float64 program did not lower"
    if float64:
        try:
            return _float64(f, leaves, treedef, u_leaves, v_leaves, step), None
        except (TypeError, ValueError) as e:
            native = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    relative = max(tolerances.for_dtype(v.dtype).native_step for v in v_leaves if v is not None)
    return _differences(f, leaves, treedef, u_leaves, v_leaves, relative), native
