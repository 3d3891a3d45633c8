"""Tolerances and finite-difference steps per dtype, in one place.

An element passes when |got - want| <= rtol |want| + atol max(1, max|want|): the absolute
term grows with the leaf's scale, so a large gradient's near-zero elements (sums that
cancel) are judged by the rounding of the sums that made them, not by a fixed atol
(jax#3130: check_grads scales its tolerance by size, along the wrong axis).

A finite-difference check compares <vjp(u), v> with the central difference of <u, f>
along a few random directions v ~ N(0, I). As E <e, v>^2 = |e|^2 for an error e of the
VJP, the RMS gap over the directions estimates |e|; a leaf passes when it is at most
`fd_rtol` |vjp(u)| + atol sqrt(size) + the differences' own rounding floor: a relative
error of the whole leaf, so a gradient scaled by 1.001 fails at any size. The central
difference runs in float64 when f accepts float64 arguments, else in the argument's own
dtype with a step of about eps^(1/3) (jax#7742: check_grads' step is below bf16's eps).
A float32 VJP carries its own rounding, about 1e-7 of |vjp(u)| (6e-6 at most over the
layers of `jaxnet.layers`): hence fd_rtol 1e-4 there, still below a 1.001 scale's 1e-3.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike


class Tolerance(NamedTuple):
    """How close a gradient of one dtype must be, and how to take its finite differences.

    Attributes:
      rtol, atol: the elementwise test above, for hand vs automatic gradients.
      fd_rtol: the finite-difference test (the leaf's relative error, estimated along
        random directions) when the central difference runs in float64.
      native_step, native_fd_rtol: the step (relative to the argument's scale) and the
        test when the central difference has to run in this dtype.
    """

    rtol: float
    atol: float
    fd_rtol: float
    native_step: float
    native_fd_rtol: float


TOLERANCES = {
    "float64": Tolerance(
        rtol=1e-9, atol=1e-12, fd_rtol=1e-6, native_step=1e-5, native_fd_rtol=1e-6
    ),
    "float32": Tolerance(rtol=2e-5, atol=1e-6, fd_rtol=1e-4, native_step=5e-3, native_fd_rtol=2e-2),
    "float16": Tolerance(rtol=4e-3, atol=1e-3, fd_rtol=2e-2, native_step=1e-1, native_fd_rtol=2e-1),
    "bfloat16": Tolerance(
        rtol=5e-2, atol=1e-2, fd_rtol=1e-1, native_step=2e-1, native_fd_rtol=3e-1
    ),
}
FD64_STEP = 1e-6  # relative to the argument's scale; float64 central differences
SECOND_ORDER_FACTOR = 10.0  # second derivatives go through twice the rounding


def for_dtype(dtype: DTypeLike) -> Tolerance:
    """The `Tolerance` of a floating dtype; other dtypes raise a ValueError."""
    name = jnp.dtype(dtype).name
    if name not in TOLERANCES:
        raise ValueError(
            f"gradcheck: no tolerance for dtype {name}; gradients are checked for "
            f"{', '.join(TOLERANCES)}. Cast the argument or pass rtol= and atol=."
        )
    return TOLERANCES[name]


def scaled(tol: Tolerance, factor: float) -> Tolerance:
    """`tol` with rtol and atol multiplied by `factor` (for second derivatives)."""
    return tol._replace(rtol=tol.rtol * factor, atol=tol.atol * factor)


def elementwise_error(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """|got - want| / (|want| + atol_eff / rtol): at most rtol exactly where allclose holds."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want), initial=0.0, where=np.isfinite(want)))
    atol_eff = atol * max(1.0, scale)
    with np.errstate(divide="ignore", invalid="ignore"):  # atol 0: exact where want is 0
        err = np.abs(got - want) / (np.abs(want) + atol_eff / rtol)
    # equal infinities agree; a NaN agrees with nothing, as in np.allclose
    return np.where(np.isfinite(err), err, np.where(got == want, 0.0, np.inf))
