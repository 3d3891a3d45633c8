"""The verdict of `gradcheck.check`: one row per leaf and check, printed as a table.

`compare` and `check_vjp` return the same rows, in a `Comparison`: a `Report` of one check.
"""

from typing import NamedTuple

import numpy as np

from jaxnet.gradcheck import tolerances

PASS, FAIL, WEAK, SKIPPED = "ok", "FAIL", "weak", "skipped"
PARTIAL = "partial"  # passed what it could see: not every element was held to a value
NOT_RUN = "not run"  # failed too, but only because a first-order row of it failed first
FIRST_ORDER = ("reference", "finite_difference")  # the oracles of the gradient itself


class Row(NamedTuple):
    """One leaf under one check.

    Attributes:
      check: the oracle, contract or transform, e.g. "reference", "vmap".
      leaf: the pytree path, e.g. "args[0]['w']", or "-" for a whole-function row.
      shape: the leaf's shape.
      verdict: "ok", "FAIL", "weak" (passed, but could not have failed), "partial" (passed
        a check that sees the leaf as a whole, not each element), "not run" (would have
        failed, but only because a first-order row failed: the note names it) or "skipped".
      error: the worst per-element relative error, |got - want| / (|want| + atol / rtol).
      worst: the index of that element.
      rtol: the error the check allows.
      note: why it failed, was weak, or was skipped.
      got, want: the two values at the worst element (for finite differences, <vjp(u), v>
        and the central difference), or None where nothing was compared.
      max_abs: max |got - want| over the leaf.
      max_rel: max_abs / max |want| (0 when both are 0).
    """

    check: str
    leaf: str
    shape: tuple[int, ...]
    verdict: str
    error: float
    worst: tuple[int, ...]
    rtol: float
    note: str = ""
    got: float | None = None
    want: float | None = None
    max_abs: float | None = None
    max_rel: float | None = None

    @property
    def path(self) -> str:
        """The leaf's pytree path (`compare`'s name for it)."""
        return self.leaf

    @property
    def allclose(self) -> bool:
        """Whether the leaf is within the tolerance: any verdict but FAIL."""
        return self.verdict != FAIL

    @property
    def exact(self) -> bool:
        """Whether got and want are equal element for element."""
        return self.max_abs == 0.0


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

    @property
    def partial(self) -> bool:
        """Whether a check passed that sees leaves as a whole (finite differences alone)."""
        return any(row.verdict == PARTIAL for row in self.rows)

    def failing(self) -> list[str]:
        """`check leaf` of every failed row."""
        return [f"{row.check} {row.leaf}" for row in self.rows if row.verdict == FAIL]

    def failing_checks(self) -> set[str]:
        """The names of the checks with a failed row."""
        return {row.check for row in self.rows if row.verdict == FAIL}

    def causes(self) -> list[str]:
        """The failures, one per root cause: a leaf's failed first-order rows count once,
        as `reference+finite_difference x` (`check_layer` prefixes the mode)."""
        grouped: dict[tuple, list[str]] = {}
        for row in self.rows:
            if row.verdict == FAIL:
                mode, _, check = row.check.rpartition(" ")
                key = (mode, row.leaf, check in FIRST_ORDER or check)
                grouped.setdefault(key, []).append(check)
        return [
            " ".join(filter(None, (mode, "+".join(checks), leaf)))
            for (mode, leaf, _), checks in grouped.items()
        ]

    def summary(self) -> str:
        """One line: the verdict, its causes, and what was weak or partial."""
        if not self.passed:
            causes, blocked = self.causes(), sum(r.verdict == NOT_RUN for r in self.rows)
            count = f"{len(causes)} cause{'s' * (len(causes) > 1)}"
            count += f", {blocked} dependent rows not run" if blocked else ""
            return f"gradcheck failed: {', '.join(causes)} ({count})"
        caveats = [f"weak: {'; '.join(self._weak())}"] if self.weak else []
        partial = [r for r in self.rows if r.verdict == PARTIAL]
        if partial:
            leaves = ", ".join(f"{r.check} {r.leaf}" for r in partial)
            caveats.append(f"partial: {leaves} ({partial[0].note})")
        return "gradcheck passed" + (f", but {'; '.join(caveats)}" if caveats else "")

    def _weak(self) -> list[str]:
        weak = [f"{r.check} {r.leaf}" for r in self.rows if r.verdict == WEAK]
        return weak + [n for n in self.notes if _is_weak(n)]

    def __str__(self) -> str:
        header = ["check", "leaf", "shape", "verdict", "max rel err", "worst at", "rtol", "note"]
        body = [
            [r.check, r.leaf, str(r.shape), r.verdict, _err(r), _index(r.worst),
             f"{r.rtol:.0e}" if r.rtol else "-", _note(r)]
            for r in self.rows
        ]  # fmt: skip
        lines = [self.summary(), table(header, body), *self.notes]
        return "\n".join(lines + ([str(self.residuals)] if self.residuals else []))


def _note(row: Row) -> str:
    """The note, after the values at the worst element for a failed row."""
    if row.verdict not in (FAIL, NOT_RUN) or row.got is None:
        return row.note
    values = f"got {row.got:.6g}, expected {row.want:.6g}"
    return f"{values}; {row.note}" if row.note else values


def _is_weak(note: str) -> bool:
    return note.startswith("weak:") or ": weak:" in note  # check_layer prefixes the mode


def _err(row: Row) -> str:
    return "-" if row.verdict == SKIPPED else f"{row.error:.2e}"


def _index(index: tuple[int, ...]) -> str:
    return "-" if index is None else str(tuple(int(i) for i in index))


class Comparison(Report):
    """A `Report` of one check over the leaves of a tree, one row per leaf (`compare`'s and
    `check_vjp`'s); its leaves are named by their paths alone."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        """Whether no leaf failed (`passed`)."""
        return self.passed

    @property
    def leaves(self) -> list[Row]:
        """The rows, one per leaf."""
        return self.rows

    def failing(self) -> list[str]:
        """The paths of the leaves that failed."""
        return [row.leaf for row in self.rows if row.verdict == FAIL]


class GradcheckError(AssertionError):
    """Raised by `gradcheck.check` when a check fails (or, with strict=True, is weak)."""

    def __init__(self, report: Report):
        super().__init__(str(report))
        self.report = report


def compare_leaf(check, leaf, got, want, tol, *, weak_if_small=True) -> Row:
    """A row for one leaf: elementwise error, worst index, and the weak-check verdict."""
    got, want = np.asarray(got), np.asarray(want)
    row = Row(check, leaf, want.shape, PASS, 0.0, None, tol.rtol)
    if got.shape != want.shape:
        note = f"shape {got.shape}, expected {want.shape}"
        return row._replace(verdict=FAIL, error=float("inf"), note=note)
    if want.size == 0:
        return row._replace(verdict=SKIPPED, note="empty: nothing to check", max_abs=0.0,
                            max_rel=0.0)  # fmt: skip
    err = tolerances.elementwise_error(got, want, tol.rtol, tol.atol)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    row = row._replace(error=float(err[worst]), worst=worst, got=got[worst].item(),
                       want=want[worst].item(), **_differences(got, want))  # fmt: skip
    if row.error > tol.rtol:
        return row._replace(verdict=FAIL)
    scale = float(np.max(np.abs(np.asarray(want, np.float64)), initial=0.0))
    if weak_if_small and scale <= tol.atol:
        note = "all zeros" if scale == 0 else f"max |want| {scale:.1e} <= atol {tol.atol:.0e}"
        return row._replace(verdict=WEAK, note=note)
    return row


def _differences(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """max |got - want| and that over max |want| (equal infinities differ by 0)."""
    wide = np.result_type(got, want, np.float64)
    got, want = got.astype(wide), want.astype(wide)
    with np.errstate(invalid="ignore"):
        diff = np.where(got == want, 0.0, np.abs(got - want))
    max_abs = float(np.max(diff))
    scale = float(np.max(np.abs(want), initial=0.0, where=np.isfinite(want)))
    max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf"))
    return {"max_abs": max_abs, "max_rel": max_rel}
