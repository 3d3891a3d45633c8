"""Central finite differences of <u, f(args)> along a few random directions per leaf, and
the verdict they give on each leaf's VJP.

For every floating argument leaf i, direction k and sign s, f is evaluated at
args + s h_i v_ik (every other leaf unchanged) inside one `lax.map`: one forward in the
program for all of them. Traced inside the check's program, in a float64 region
(`jax.enable_x64` while tracing): closed-over float32 arrays promote, exactly. Where f
refuses float64 arguments (a dtype check against a closed-over target), in the arguments'
own dtype with a step suited to it.

Each leaf also gets the rounding floor of its differences: <u, f> is a sum whose rounding
is about eps sum|u f|, divided by the step; a gap below it says nothing about the VJP.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import tolerances
from jaxnet.gradcheck._report import FAIL, PASS, SKIPPED, WEAK, Row

CHECK = "finite_difference"
DIRECTIONS = 3  # random directions per leaf: E<e, v>^2 = |e|^2 estimates the VJP's error
_ROUNDING = 16.0  # the sum's rounding and f's own, with room


def _inner(u_leaves, out):
    """(<u, out>, sum |u out|): the value and the scale of its rounding."""
    pairs = [(u.astype(o.dtype), o) for u, o in zip(u_leaves, jax.tree_util.tree_leaves(out))
             if u is not None]  # fmt: skip
    return sum(jnp.sum(u * o) for u, o in pairs), sum(jnp.sum(jnp.abs(u * o)) for u, o in pairs)


def _points(v_leaves):
    """(coefficient per leaf, direction) of each evaluation 2 (n K + k) + s: the n-th
    floating leaf, its direction k of K, the sign s (+ then -)."""
    which = [i for i, v in enumerate(v_leaves) if v is not None]
    count = v_leaves[which[0]].shape[0]
    coefs = np.zeros((len(which), count, 2, len(v_leaves)))
    for n, i in enumerate(which):
        coefs[n, :, 0, i], coefs[n, :, 1, i] = 1.0, -1.0
    directions = np.broadcast_to(np.arange(count)[None, :, None], coefs.shape[:3])
    return coefs.reshape(-1, len(v_leaves)), directions.reshape(-1)


def _step(x, relative):
    """The step along a direction, relative to x's RMS (at least 1; 1 for an empty x)."""
    rms = jnp.sqrt(jnp.mean(jnp.square(x))) if jnp.size(x) else 1.0
    return relative * jnp.maximum(1.0, rms)


def _differences(f, leaves, treedef, u_leaves, v_leaves, relative):
    """(per leaf: the differences along its K directions, their rounding floor)."""
    coefs, directions = _points(v_leaves)
    steps = [None if v is None else _step(x, relative) for x, v in zip(leaves, v_leaves)]

    def value(point):
        coef, k = point
        moved = [
            x if v is None else x + (c * h).astype(x.dtype) * v[k]
            for x, v, c, h in zip(leaves, v_leaves, coef, steps)
        ]
        return _inner(u_leaves, f(*treedef.unflatten(moved)))

    dtype = next(v.dtype for v in v_leaves if v is not None)
    values, sizes = jax.lax.map(value, (jnp.asarray(coefs, dtype), jnp.asarray(directions)))
    count = next(v.shape[0] for v in v_leaves if v is not None)
    values, sizes = values.reshape(-1, count, 2), sizes.reshape(-1, 2 * count)
    eps = _ROUNDING * jnp.finfo(values.dtype).eps
    floating = iter(range(values.shape[0]))
    fd, floor = [], []
    for h in steps:
        n = None if h is None else next(floating)
        fd.append(None if h is None else (values[n, :, 0] - values[n, :, 1]) / (2 * h))
        floor.append(None if h is None else eps * jnp.max(sizes[n]) / h)
    return fd, floor


def _float64(f, leaves, treedef, u_leaves, v_leaves, step):
    with jax.enable_x64(True):
        wide = [x if v is None else jnp.asarray(x, jnp.float64) for x, v in zip(leaves, v_leaves)]
        # float64 values leave the program as they are
        return _differences(f, wide, treedef, _wide(u_leaves), _wide(v_leaves), step)


def _wide(leaves):
    return [None if x is None else jnp.asarray(x, jnp.float64) for x in leaves]


def directional(f, args, u_leaves, v_leaves, *, float64=True, step=tolerances.FD64_STEP):
    """((per leaf fd of <u, f> along each v [K], rounding floor), why not float64 or None).

    v_leaves: per leaf, K directions stacked ([K, *shape]), None where not floating.
    `step` is the float64 step, relative to each argument's scale. Call while tracing: the
    float64 part runs inside `jax.enable_x64(True)`.
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


def row(path, g, v, d, floor, native, overrides) -> Row:
    """The verdict on one leaf g = vjp(u), from the differences d [K] along v [K, *shape].

    For v ~ N(0, I), E <e, v>^2 = |e|^2: the RMS gap between <g, v_k> and d_k estimates the
    VJP's error |e|, held to rtol |g| + atol sqrt(size) (atol scaled to max|g|, as every
    comparison's) + the differences' rounding floor. Unlike a bound by |g| |v|, this sees
    a 1.001 scale of g at any size.
    """
    tol = tolerances.for_dtype(g.dtype)
    rtol = overrides.get("rtol", tol.native_fd_rtol if native else tol.fd_rtol)
    note = f"in {g.dtype}, as f refused float64 ({native})" if native else ""
    result = Row(CHECK, path, g.shape, PASS, 0.0, None, rtol, note)
    if g.size == 0:
        return result._replace(verdict=SKIPPED, note="empty: nothing to check", max_abs=0.0,
                               max_rel=0.0)  # fmt: skip
    g64, d = np.asarray(g, np.float64).ravel(), np.asarray(d, np.float64)
    vjp_v = np.asarray(v, np.float64).reshape(len(d), -1) @ g64
    gap = np.abs(vjp_v - d)
    scale = max(1.0, float(np.max(np.abs(g64))))
    allowed = overrides.get("atol", tol.atol) * scale * np.sqrt(g64.size) + float(floor)
    rms = float(np.sqrt(np.mean(np.square(gap))))
    err = rms / (np.linalg.norm(g64) + allowed / rtol) if np.isfinite(rms) else np.inf
    k = int(np.argmax(np.where(np.isnan(gap), np.inf, gap)))
    largest = float(np.max(np.abs(d)))
    max_rel = gap[k] / largest if largest else (0.0 if gap[k] == 0 else np.inf)
    result = result._replace(error=err, got=float(vjp_v[k]), want=float(d[k]),
                             max_abs=float(gap[k]), max_rel=float(max_rel))  # fmt: skip
    if not err <= rtol:
        worst = f"<vjp(u), v> and the difference along the worst of {len(d)} directions"
        return result._replace(verdict=FAIL, note="; ".join(n for n in (worst, note) if n))
    return result._replace(verdict=WEAK) if np.max(np.abs(g64)) <= tol.atol else result
