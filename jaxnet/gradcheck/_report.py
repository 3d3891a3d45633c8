"""The verdict of `gradcheck.check`: one row per leaf and check, printed as a table."""

from typing import NamedTuple

import numpy as np

from jaxnet.gradcheck import tolerances

PASS, FAIL, WEAK, SKIPPED = "ok", "FAIL", "weak", "skipped"


class Row(NamedTuple):
    """One leaf under one check.

    Attributes:
      check: the oracle, contract or transform, e.g. "reference", "vmap".
      leaf: the pytree path, e.g. "args[0]['w']", or "-" for a whole-function row.
      shape: the leaf's shape.
      verdict: "ok", "FAIL", "weak" (passed, but could not have failed) or "skipped".
      error: the worst per-element relative error, |got - want| / (|want| + atol / rtol).
      worst: the index of that element.
      rtol: the error the check allows.
      note: why it failed, was weak, or was skipped.
    """

    check: str
    leaf: str
    shape: tuple[int, ...]
    verdict: str
    error: float
    worst: tuple[int, ...]
    rtol: float
    note: str = ""


class Residuals(NamedTuple):
    """What the backward pass keeps: the hand VJP against `jax.vjp` of the reference."""

    hand_bytes: int
    hand_arrays: int
    hand_argument_bytes: int
    reference_bytes: int
    reference_arrays: int
    reference_argument_bytes: int

    def __str__(self) -> str:
        return (
            f"residuals: hand {_kib(self.hand_bytes)} in {self.hand_arrays} arrays "
            f"({_kib(self.hand_bytes - self.hand_argument_bytes)} beyond its arguments); "
            f"reference {_kib(self.reference_bytes)} in {self.reference_arrays} arrays "
            f"({_kib(self.reference_bytes - self.reference_argument_bytes)} beyond its arguments)"
        )


def _kib(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, a dashed rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)


class Report(NamedTuple):
    """Every check of one `gradcheck.check` call.

    Attributes:
      rows: one `Row` per leaf and check.
      notes: why a check was weak or skipped beyond a single leaf (ReLU gates, forward mode).
      residuals: the residual audit, or None when it was not run.
    """

    rows: list[Row]
    notes: list[str]
    residuals: Residuals | None

    @property
    def passed(self) -> bool:
        return all(row.verdict != FAIL for row in self.rows)

    @property
    def weak(self) -> bool:
        return any(row.verdict == WEAK for row in self.rows) or any(
            _is_weak(note) for note in self.notes
        )

    def failing(self) -> list[str]:
        """`check leaf` of every failed row."""
        return [f"{row.check} {row.leaf}" for row in self.rows if row.verdict == FAIL]

    def failing_checks(self) -> set[str]:
        """The names of the checks with a failed row."""
        return {row.check for row in self.rows if row.verdict == FAIL}

    def summary(self) -> str:
        """One line: the verdict and what failed or was weak."""
        if not self.passed:
            return f"gradcheck failed: {', '.join(self.failing())}"
        weak = [f"{r.check} {r.leaf}" for r in self.rows if r.verdict == WEAK]
        weak += [n for n in self.notes if _is_weak(n)]
        return f"gradcheck passed, but weak: {'; '.join(weak)}" if weak else "gradcheck passed"

    def __str__(self) -> str:
        header = ["check", "leaf", "shape", "verdict", "max rel err", "worst at", "rtol", "note"]
        body = [
            [r.check, r.leaf, str(r.shape), r.verdict, _err(r), _index(r.worst),
             f"{r.rtol:.0e}" if r.rtol else "-", r.note]
            for r in self.rows
        ]  # fmt: skip
        lines = [self.summary(), table(header, body), *self.notes]
        return "\n".join(lines + ([str(self.residuals)] if self.residuals else []))


def _is_weak(note: str) -> bool:
    return note.startswith("weak:") or ": weak:" in note  # check_layer prefixes the mode


def _err(row: Row) -> str:
    return "-" if row.verdict == SKIPPED else f"{row.error:.2e}"


def _index(index: tuple[int, ...]) -> str:
    return "-" if index is None else str(tuple(int(i) for i in index))


class GradcheckError(AssertionError):
    """Raised by `gradcheck.check` when a check fails (or, with strict=True, is weak)."""

    def __init__(self, report: Report):
        super().__init__(str(report))
        self.report = report


def compare_leaf(check, leaf, got, want, tol, *, weak_if_small=True) -> Row:
    """A row for one leaf: elementwise error, worst index, and the weak-check verdict."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        note = f"shape {got.shape}, expected {want.shape}"
        return Row(check, leaf, want.shape, FAIL, float("inf"), None, tol.rtol, note)
    err = tolerances.elementwise_error(got, want, tol.rtol, tol.atol)
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else None
    max_err = float(err.max()) if err.size else 0.0
    if max_err > tol.rtol:
        return Row(check, leaf, want.shape, FAIL, max_err, worst, tol.rtol, "")
    scale = float(np.max(np.abs(np.asarray(want, np.float64)), initial=0.0))
    if weak_if_small and scale <= tol.atol:
        note = "all zeros" if scale == 0 else f"max |want| {scale:.1e} <= atol {tol.atol:.0e}"
        return Row(check, leaf, want.shape, WEAK, max_err, worst, tol.rtol, note)
    return Row(check, leaf, want.shape, PASS, max_err, worst, tol.rtol, "")
