"""The checker's smaller tools: two gradient trees leaf by leaf, or a VJP against finite
differences alone, judged by the rows, tolerances and finite differences of `check`.

`compare` prints as the report's table, one row per leaf, like the `cmp` helper of
Karpathy's backprop-ninja notebook; `assert_close` raises `GradcheckError` with it.
`check_vjp` is `check`'s finite-difference oracle alone: no reference, no contract.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import _battery as battery
from jaxnet.gradcheck import _check, tolerances
from jaxnet.gradcheck import _trees as trees
from jaxnet.gradcheck._report import Comparison, GradcheckError, compare_leaf
from jaxnet.typing import PyTree


def compare(
    got: PyTree, want: PyTree, *, rtol: float | None = None, atol: float | None = None
) -> Comparison:
    """Compares two gradient pytrees of the same structure, leaf by leaf.

    An element passes when |got - want| <= rtol |want| + atol max(1, max|want|): the
    absolute term scales with the leaf's magnitude (`gradcheck.tolerances`).

    Args:
      got: e.g. the hand-written gradients.
      want: e.g. `jax.grad` of the reference.
      rtol, atol: override the tolerances of each leaf's dtype (non-floating leaves are
        held to float64's: exact).

    Returns:
      A `Comparison`; `print` it for the table, read `.ok` for the verdict.
    """
    if rtol is not None and not rtol > 0:
        raise ValueError(f"compare: rtol must be positive, got {rtol!r}.")
    got_def, want_def = jax.tree_util.tree_structure(got), jax.tree_util.tree_structure(want)
    if got_def != want_def:
        raise ValueError(
            f"compare: the trees differ in structure:\n  got  {got_def}\n  want {want_def}"
        )
    paths, want_leaves = trees.paths(want)
    rows = [
        _leaf(path or "<root>", g, w, _tolerance(w, rtol, atol))
        for path, g, w in zip(paths, jax.tree_util.tree_leaves(got), want_leaves)
    ]
    return Comparison(rows, [], None)


def _leaf(path, got, want, tol):
    if np.shape(got) != np.shape(want):
        raise ValueError(
            f"compare: leaf {path} has shape {np.shape(got)} in got, {np.shape(want)} in want."
        )
    return compare_leaf("compare", path, got, want, tol)


def _tolerance(leaf, rtol, atol) -> tolerances.Tolerance:
    dtype = jnp.result_type(leaf) if trees.is_float(leaf) else jnp.float64
    tol = tolerances.for_dtype(dtype)
    overrides = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
    return tol._replace(**overrides)


def assert_close(
    got: PyTree, want: PyTree, *, rtol: float | None = None, atol: float | None = None
) -> Comparison:
    """`compare`, raising `GradcheckError` with the table if any leaf differs."""
    report = compare(got, want, rtol=rtol, atol=atol)
    if not report.ok:
        raise GradcheckError(report)
    return report


def check_vjp(
    f: Callable[..., PyTree],
    *args: PyTree,
    eps: float = tolerances.FD64_STEP,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
) -> Comparison:
    """Holds the VJP of f against central finite differences in float64, leaf by leaf.

    `check`'s finite-difference oracle alone: under a random output cotangent u, compares
    <vjp(u), v> with the central difference of <u, f> along random directions v, per
    floating argument leaf. The differences run in float64 inside `jax.enable_x64`,
    restored on return; where f refuses float64 arguments (a dtype check against a
    closed-over array), in the arguments' dtype, and the row says so.

    Args:
      f: a function of arrays (pytrees allowed) to arrays; a custom_vjp is fine.
      *args: its arguments. Integer leaves (labels) are passed through and not perturbed.
      eps: the float64 step, relative to each argument's scale (its RMS, at least 1).
      rtol, atol: override the finite-difference tolerances of each leaf's dtype.
      seed: for the random cotangent and directions.

    Returns:
      A `Comparison`; `print` it for the table, read `.ok` for the verdict.
    """
    _check.validate(1, (), args, rtol)
    spec = battery.Spec(1, (), None, contract=False, fd_step=eps)
    report = _check.judge(f, None, args, spec, seed=seed, rtol=rtol, atol=atol)
    return Comparison(report.rows, report.notes, None)


def assert_vjp(f: Callable[..., PyTree], *args: PyTree, **kwargs) -> Comparison:
    """`check_vjp`, raising `GradcheckError` with the table if any leaf fails."""
    report = check_vjp(f, *args, **kwargs)
    if not report.ok:
        raise GradcheckError(report)
    return report
