"""Compare hand-written gradients with automatic ones, leaf by leaf, by pytree path.

`compare` returns a report that prints as a table, one row per leaf, like the `cmp` helper
of Karpathy's backprop-ninja notebook; `assert_close` raises with that table when any leaf
differs. `check_vjp` holds a VJP against central finite differences in float64 (reverse
mode only), without leaving `jax_enable_x64` on. `gradcheck.check` does all of this and more.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import tolerances
from jaxnet.gradcheck._report import table
from jaxnet.typing import PyTree


class GradientMismatchError(AssertionError):
    """Raised when two gradients, or a VJP and finite differences, disagree."""


class LeafComparison(NamedTuple):
    """One leaf of `compare`: `max_rel` is max|got - want| / max|want| (0 when both are 0)."""

    path: str
    shape: tuple[int, ...]
    exact: bool
    allclose: bool
    max_abs: float
    max_rel: float


class Comparison(NamedTuple):
    """Every leaf compared, with the tolerances used."""

    leaves: list[LeafComparison]
    rtol: float
    atol: float

    @property
    def ok(self) -> bool:
        return all(leaf.allclose for leaf in self.leaves)

    def failing(self) -> list[str]:
        """Paths of the leaves that are not allclose."""
        return [leaf.path for leaf in self.leaves if not leaf.allclose]

    def __str__(self) -> str:
        header = ["leaf", "shape", "exact", "allclose", "max abs diff", "max rel diff"]
        rows = [
            [leaf.path, str(leaf.shape), str(leaf.exact), str(leaf.allclose),
             f"{leaf.max_abs:.3e}", f"{leaf.max_rel:.3e}"]
            for leaf in self.leaves
        ]  # fmt: skip
        return table(header, rows) + f"\n(rtol={self.rtol:g}, atol={self.atol:g})"


def _leaves(tree: PyTree) -> tuple[list[tuple[str, object]], object]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in flat], treedef


def _compare_leaf(path: str, got, want, rtol: float, atol: float) -> LeafComparison:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise ValueError(
            f"compare: leaf {path} has shape {got.shape} in got, {want.shape} in want."
        )
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf"))
    return LeafComparison(
        path=path,
        shape=got.shape,
        exact=bool(np.array_equal(got, want)),
        allclose=bool(np.allclose(got, want, rtol=rtol, atol=atol)),
        max_abs=max_abs,
        max_rel=max_rel,
    )


def compare(got: PyTree, want: PyTree, *, rtol: float = 1e-5, atol: float = 1e-8) -> Comparison:
    """Compares two gradient pytrees of the same structure, leaf by leaf.

    Args:
      got: e.g. the hand-written gradients.
      want: e.g. `jax.grad` of the reference.
      rtol, atol: `np.allclose` tolerances: |got - want| <= atol + rtol * |want|.

    Returns:
      A `Comparison`; `print` it for the table, read `.ok` for the verdict.
    """
    got_leaves, got_def = _leaves(got)
    want_leaves, want_def = _leaves(want)
    if got_def != want_def:
        raise ValueError(
            f"compare: the trees differ in structure:\n  got  {got_def}\n  want {want_def}"
        )
    rows = [_compare_leaf(p, g, w, rtol, atol) for (p, g), (_, w) in zip(got_leaves, want_leaves)]
    return Comparison(rows, rtol, atol)


def assert_close(
    got: PyTree, want: PyTree, *, rtol: float = 1e-5, atol: float = 1e-8
) -> Comparison:
    """`compare`, raising `GradientMismatchError` with the table if any leaf differs."""
    report = compare(got, want, rtol=rtol, atol=atol)
    if not report.ok:
        raise GradientMismatchError(f"gradients differ at {', '.join(report.failing())}:\n{report}")
    return report


# ------------------------------------------------------------------- finite differences


class LeafFiniteDifference(NamedTuple):
    """One argument leaf of `check_vjp`: the directional derivative both ways."""

    path: str
    shape: tuple[int, ...]
    vjp: float
    finite_difference: float
    abs_err: float
    rel_err: float
    ok: bool


class FiniteDifferenceCheck(NamedTuple):
    """Every floating argument leaf checked, with the step and tolerances used."""

    leaves: list[LeafFiniteDifference]
    eps: float
    rtol: float
    atol: float

    @property
    def ok(self) -> bool:
        return all(leaf.ok for leaf in self.leaves)

    def failing(self) -> list[str]:
        return [leaf.path for leaf in self.leaves if not leaf.ok]

    def __str__(self) -> str:
        header = ["leaf", "shape", "vjp . v", "finite diff", "abs err", "rel err", "ok"]
        rows = [
            [leaf.path, str(leaf.shape), f"{leaf.vjp:.10e}", f"{leaf.finite_difference:.10e}",
             f"{leaf.abs_err:.3e}", f"{leaf.rel_err:.3e}", str(leaf.ok)]
            for leaf in self.leaves
        ]  # fmt: skip
        return table(header, rows) + f"\n(eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g})"


def _to_float64(tree: PyTree) -> PyTree:
    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree_util.tree_map(cast, tree)


def _random_like(key, tree: PyTree) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten(
        [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    )


def _inner(a: PyTree, b: PyTree) -> float:
    products = jax.tree_util.tree_map(lambda x, y: jnp.sum(x * y), a, b)
    return float(sum(jax.tree_util.tree_leaves(products)))


def _fd_rows(f, args, cotangents, out_u, key, eps, rtol, atol):
    # Both trees skip None the same way (an empty subtree), so their leaves line up.
    flat, treedef = jax.tree_util.tree_flatten_with_path(args)
    flat_cot = jax.tree_util.tree_leaves(cotangents)
    rows = []
    for i, ((path, leaf), cot) in enumerate(zip(flat, flat_cot)):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            continue  # integer arguments (labels) have no derivative
        v = jax.random.normal(jax.random.fold_in(key, i), jnp.shape(leaf), jnp.result_type(leaf))

        def shifted(step, i=i, v=v):
            leaves = [x for _, x in flat]
            leaves[i] = leaves[i] + step * v
            return _inner(out_u, f(*treedef.unflatten(leaves)))

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        an = float(jnp.sum(cot * v)) if cot is not None else 0.0
        err = abs(an - fd)
        rows.append(
            LeafFiniteDifference(
                "args" + jax.tree_util.keystr(path), tuple(jnp.shape(leaf)), an, fd, err,
                err / max(abs(fd), 1e-300), err <= atol + rtol * abs(fd),
            )
        )  # fmt: skip
    return rows


def check_vjp(
    f: Callable[..., PyTree],
    *args: PyTree,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    seed: int = 0,
) -> FiniteDifferenceCheck:
    """Holds `jax.vjp(f)` against central finite differences in float64, leaf by leaf.

    For a random output cotangent u and, per floating argument leaf, a random direction v,
    compares <vjp(u), v> with (<u, f(a + eps v)> - <u, f(a - eps v)>) / (2 eps). Floating
    arguments are cast to float64 inside `jax.enable_x64(True)`, restored on return; a
    closed-over float32 array promotes. Where f refuses float64 arguments (a dtype check
    against a closed-over array), the check runs in the arguments' dtype, with the step
    and tolerance of `gradcheck.tolerances` for it, and the report says so by its eps.

    Args:
      f: a function of arrays (pytrees allowed) to arrays; a custom_vjp is fine.
      *args: its arguments. Integer leaves (labels) are passed through and not perturbed.
      eps: the finite-difference step.
      rtol, atol: a leaf passes when |vjp - fd| <= atol + rtol * |fd|.
      seed: for the random cotangent and directions.

    Returns:
      A `FiniteDifferenceCheck`; `print` it for the table, read `.ok` for the verdict.
    """
    try:
        with jax.enable_x64(True):
            return _check_vjp(f, _to_float64(args), eps, rtol, atol, seed)
    except (TypeError, ValueError):
        dtypes = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(args)]
        tol = tolerances.for_dtype(max((d for d in dtypes if jnp.issubdtype(d, jnp.floating)),
                                       key=lambda d: -jnp.finfo(d).eps))  # fmt: skip
        return _check_vjp(f, args, tol.native_step, tol.native_fd_rtol, atol, seed)


def _check_vjp(f, args, eps, rtol, atol, seed):
    out, vjp_fn = jax.vjp(f, *args)
    out_key, dir_key = jax.random.split(jax.random.key(seed))
    out_u = _random_like(out_key, out)
    rows = _fd_rows(f, args, vjp_fn(out_u), out_u, dir_key, eps, rtol, atol)
    return FiniteDifferenceCheck(rows, eps, rtol, atol)


def assert_vjp(f: Callable[..., PyTree], *args: PyTree, **kwargs) -> FiniteDifferenceCheck:
    """`check_vjp`, raising `GradientMismatchError` with the table if any leaf fails."""
    report = check_vjp(f, *args, **kwargs)
    if not report.ok:
        raise GradientMismatchError(
            f"VJP and finite differences differ at {', '.join(report.failing())}:\n{report}"
        )
    return report
