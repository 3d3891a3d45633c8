"""`check`: the one call that holds a hand-written VJP against every oracle it has."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import _battery as battery
from jaxnet.gradcheck import _fd as fd
from jaxnet.gradcheck import _residuals as residuals
from jaxnet.gradcheck import _run as run
from jaxnet.gradcheck import _trees as trees
from jaxnet.gradcheck import tolerances
from jaxnet.gradcheck._report import (
    FAIL,
    FIRST_ORDER,
    NOT_RUN,
    PARTIAL,
    PASS,
    SKIPPED,
    GradcheckError,
    Report,
    Row,
    compare_leaf,
)
from jaxnet.typing import PyTree

ORACLES = ("forward", "reference", "finite_difference", *battery.ORACLES_2)
CONTRACT = ("structure", "zero_cotangent", "scaling", "additivity")


def check(
    f: Callable[..., PyTree],
    reference: Callable[..., PyTree] | None,
    *args: PyTree,
    order: int = 2,
    strict: bool = False,
    transforms: Sequence[str] = (),
    batch_argnums: Sequence[int] | None = None,
    arg_names: Sequence[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    finite_differences: bool = True,
    audit: bool = True,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> Report:
    """Holds the VJP of f (a custom_vjp, or built on them) against every oracle.

    Under random normal cotangents u (not a sum or a mean), compares: f's output with the
    reference's; f's VJP with `jax.vjp` of the reference, elementwise; <vjp(u), v> with
    float64 central differences of <u, f> along 3 random v per leaf (the leaf's relative
    error as a whole); with order=2, the VJP of the VJP (rev-over-rev) and its JVP
    (forward-over-reverse; skipped with the reason where JAX refuses forward mode through
    a custom_vjp) with the reference's. Then the cotangent contract (tree and dtypes as
    autodiff's, float0 for integer inputs; zero cotangent -> zero; vjp(8u) = 8 vjp(u);
    vjp(u + u') = vjp(u) + vjp(u')) and the `transforms` asked for. Tolerances come from
    each leaf's dtype (`gradcheck.tolerances`). One compile per new signature.

    A failed row names the values at its worst element. Once a first-order row (reference
    or finite differences) fails for a leaf, second derivatives and that leaf's transforms
    that fail too are "not run": the summary counts root causes. Without a reference,
    finite differences alone pass as "partial": they see each leaf as a whole, so one
    wrong element among thousands can hide. f or a VJP that raises, or returns the wrong
    tree, is a failed "vjp" row; an empty leaf is "skipped", with nothing to check.

    Args:
      f: the function with the hand VJP: pytrees of arrays in, a pytree of arrays out.
      reference: the same function in plain jax.numpy, for `jax.vjp`; None checks
        against finite differences only (a "partial" pass at best).
      *args: f's arguments: floating leaves are differentiated; integer leaves (labels)
        must get no cotangent (float0); None is allowed anywhere in the trees.
      order: 1, or 2 to check second derivatives too.
      strict: also raise when a check is weak (it could not have failed).
      transforms: any of "jit", "vmap", "vmap_of_grad", "grad_of_vmap", "scan",
        "checkpoint" (`battery.TRANSFORMS`); each compares the transformed VJP with
        the plain one, per example.
      arg_names: names for the arguments in the report (default args[0], args[1], ...).
      batch_argnums: the arguments that get the batch axis in the transforms (the others,
        say params, stay shared); None: all of them.
      rtol, atol: override the dtype's first-order tolerances.
      finite_differences: run the finite-difference oracle.
      audit: report the residual bytes of the hand VJP against the reference's.
      seed: for every random draw.
      raise_on_failure: raise `GradcheckError` on failure (and on weakness if strict).

    Returns:
      The `Report`: `print` it for the table; `.passed`, `.weak`, `.partial`, `.causes()`,
      `.rows`.
    """
    validate(order, transforms, args, rtol)
    spec = battery.Spec(
        order,
        tuple(transforms),
        None if batch_argnums is None else tuple(batch_argnums),
        finite_differences=finite_differences,
    )
    report = judge(f, reference, args, spec, seed=seed, arg_names=arg_names, rtol=rtol,
                   atol=atol)  # fmt: skip
    if audit and reference is not None:
        report = report._replace(residuals=_audit(f, reference, args))
    if raise_on_failure and (not report.passed or (strict and report.weak)):
        raise GradcheckError(report)
    return report


def judge(f, reference, args, spec, *, seed=0, arg_names=None, rtol=None, atol=None) -> Report:
    """The rows and notes of the checks `spec` asks for (no audit, never raises on a verdict)."""
    pairs, notes = run.run(f, reference, spec, args, seed)
    overrides = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
    paths = _names(args, arg_names)
    dtypes = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(args)]
    if "hand" not in pairs:  # f or its VJP raised: nothing else could run
        return Report(_ordered([], notes), [], None)
    rows, extra = _rows(pairs, notes, paths, dtypes, overrides)
    if spec.finite_differences:
        rows += _fd_rows(pairs, notes, paths, overrides, partial=reference is None)
    if "jit" in spec.transforms and "jit" in pairs:
        rows += _jit_rows(f, args, pairs, paths, dtypes, overrides)
    if reference is None and spec.order == 2:
        reason = "no reference: second derivatives are compared with the reference's"
        rows += [Row(name, "-", (), SKIPPED, 0.0, None, 0.0, reason) for name in battery.ORACLES_2]
    return Report(_blame(_ordered(rows, notes)), extra, None)


def _audit(f, reference, args):
    try:
        return residuals.audit(f, reference, args)
    except Exception:  # noqa: BLE001 - the audit reports; the checks above judge
        return None


def validate(order, transforms, args, rtol) -> None:
    """Raises a ValueError for arguments `check` cannot run with."""
    if rtol is not None and not rtol > 0:
        raise ValueError(f"gradcheck.check: rtol must be positive, got {rtol!r}.")
    if order not in (1, 2):
        raise ValueError(f"gradcheck.check: order must be 1 or 2, got {order!r}.")
    unknown = set(transforms) - set(battery.TRANSFORMS)
    if unknown:
        raise ValueError(
            f"gradcheck.check: unknown transforms {sorted(unknown)}; "
            f"choose from {', '.join(battery.TRANSFORMS)}."
        )
    if not any(trees.is_float(x) for x in jax.tree_util.tree_leaves(args)):
        raise ValueError("gradcheck.check: no floating argument leaf to differentiate.")


def _names(args, arg_names):
    if arg_names is None:
        return ["args" + p for p in trees.paths(tuple(args))[0]]
    return [n + p for n, a in zip(arg_names, args) for p in trees.paths(a)[0]]


def _tolerance(dtype, overrides, order=1):
    tol = tolerances.for_dtype(dtype)
    if order == 2:
        return tolerances.scaled(tol, tolerances.SECOND_ORDER_FACTOR)
    return tol._replace(**overrides)


def _pair_rows(name, got, want, paths, dtypes, overrides, order=1, weak_if_small=False):
    """Rows for one check; the tolerance follows the primal's dtype, not the cotangent's."""
    rows = []
    for path, g, w, dtype in zip(paths, got, want, dtypes):
        if w is None:
            continue
        tol = _tolerance(dtype, overrides, order)
        if g is None:
            rows.append(Row(name, path, np.shape(w), FAIL, np.inf, None, tol.rtol, "no cotangent"))
            continue
        rows.append(compare_leaf(name, path, g, w, tol, weak_if_small=weak_if_small))
    return rows


def _rows(pairs, notes, paths, dtypes, overrides):
    u = pairs["draws"][0]
    out_paths = [f"out{i}" if len(u) > 1 else "out" for i in range(len(u))]
    out_dtypes = [None if x is None else x.dtype for x in u]
    rows = []
    if "forward" in pairs:
        rows += _pair_rows("forward", *pairs["forward"], out_paths, out_dtypes, overrides)
        rows += _pair_rows("reference", *pairs["reference"], paths, dtypes, overrides,
                           weak_if_small=True)  # fmt: skip
        rows.append(
            Row("structure", "-", (), PASS, 0.0, None, 0.0, "tree and dtypes as autodiff's")
        )
    for name in battery.ORACLES_2:
        if name in pairs:  # a zero second derivative is often the true one (ReLU): never weak
            rows += _pair_rows(name, *pairs[name], paths + [f"u{p[3:]}" for p in out_paths],
                               dtypes + out_dtypes, overrides, order=2)  # fmt: skip
    for name in ("zero_cotangent", "scaling", "additivity", *battery.TRANSFORMS):
        if name in pairs and name != "jit":  # a zero cotangent must give exactly zero
            exact = {"atol": 0.0} if name == "zero_cotangent" else {}
            rows += _pair_rows(name, *pairs[name], paths, dtypes, {**overrides, **exact})
    return rows, _gate_notes(pairs["gates"][0], notes.gates) if "gates" in pairs else []


def _gate_notes(fractions, gates):
    found = []
    for fraction, (where, shape) in zip(fractions, gates):
        if float(fraction) in (0.0, 1.0):
            side = "positive" if float(fraction) == 1.0 else "at most 0"
            found.append(
                f"weak: every input of {where} {list(shape)} is {side}: a wrong ReLU mask "
                "would pass; choose inputs on both sides of 0"
            )
    return found


def _fd_rows(pairs, notes, paths, overrides, partial):
    values, v_leaves = pairs["finite_difference"]
    leaves = zip(paths, pairs["hand"][0], v_leaves, values, pairs["fd_floor"][0])
    rows = [fd.row(*leaf, notes.fd_native, overrides) for leaf in leaves if leaf[1] is not None]
    return [_partial(r) if partial and r.verdict == PASS else r for r in rows]


def _partial(row):
    # alone, differences along K random directions bound the leaf's error as a whole: one
    # wrong element among thousands can hide below that bound
    note = (
        f"no reference: finite differences along {fd.DIRECTIONS} random directions judge the "
        "leaf as a whole, not each element"
    )
    return row._replace(verdict=PARTIAL, note=_join(note, row.note))


def _join(*notes):
    return "; ".join(n for n in notes if n)


def _jit_rows(f, args, pairs, paths, dtypes, overrides):
    try:
        eager = _eager_vjp(f, args, pairs["jit_cotangent"][0])
    except Exception as e:  # noqa: BLE001 - a VJP that raises only eagerly fails "jit"
        return [Row("jit", "-", (), FAIL, np.inf, None, 0.0, f"eagerly, {run.reason(e)}")]
    return _pair_rows("jit", pairs["jit"][0], eager, paths, dtypes, overrides)


def _eager_vjp(f, args, u_leaves):
    out, hand_vjp = jax.vjp(f, *args)
    treedef = jax.tree_util.tree_structure(out)
    zeros = [np.zeros(np.shape(x), jax.dtypes.float0) for x in jax.tree_util.tree_leaves(out)]
    u = treedef.unflatten([z if x is None else x for x, z in zip(u_leaves, zeros)])
    return [None if x is None else np.asarray(x) for x in trees.flat(hand_vjp(u))]


def _ordered(rows, notes):
    """Rows for checks that failed or were skipped while tracing, then all rows by check."""
    for name, reason in notes.failed.items():
        rows = [r for r in rows if r.check != name or r.verdict == FAIL]
        rows.append(Row(name, "-", (), FAIL, np.inf, None, 0.0, reason))
    for name, reason in notes.skipped.items():
        rows.append(Row(name, "-", (), SKIPPED, 0.0, None, 0.0, reason))
    order = ["vjp", *ORACLES, *CONTRACT, *battery.TRANSFORMS]
    return sorted(rows, key=lambda r: order.index(r.check) if r.check in order else len(order))


def _blame(rows):
    """Failed rows that a failed first-order row explains (any second derivative; a
    transform of that leaf) become "not run", naming the leaves at fault."""
    roots = sorted({r.leaf for r in rows if r.check in FIRST_ORDER and r.verdict == FAIL})
    if not roots:
        return rows
    note = "first order failed" + (f" for {', '.join(roots)}" if roots != ["-"] else "")

    def explained(r):
        return r.check in battery.ORACLES_2 or (r.check in battery.TRANSFORMS and r.leaf in roots)

    return [
        r._replace(verdict=NOT_RUN, note=_join(note, r.note))
        if r.verdict == FAIL and explained(r)
        else r
        for r in rows
    ]
