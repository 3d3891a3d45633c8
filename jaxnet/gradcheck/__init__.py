"""Hold hand-written gradients against automatic ones, finite differences and transforms.

`check(f, reference, *args)` is the one call: it compares f's custom VJP with `jax.vjp`
of a plain reference, with float64 finite differences, to second order, under the
cotangent contract and (asked for) jit, vmap, scan and checkpoint, and returns a `Report`
that prints as a table; `check_layer` does the same for a `jaxnet.layers` layer.

`compare`/`assert_close` (two gradient trees, leaf by leaf) and `check_vjp`/`assert_vjp`
(finite differences alone) are its smaller tools, with the same rows, tolerances, finite
differences and `GradcheckError`.
"""

from jaxnet.gradcheck import tolerances as tolerances
from jaxnet.gradcheck._battery import TRANSFORMS as TRANSFORMS
from jaxnet.gradcheck._check import check as check
from jaxnet.gradcheck._compare import assert_close as assert_close
from jaxnet.gradcheck._compare import assert_vjp as assert_vjp
from jaxnet.gradcheck._compare import check_vjp as check_vjp
from jaxnet.gradcheck._compare import compare as compare
from jaxnet.gradcheck._layer import check_layer as check_layer
from jaxnet.gradcheck._report import Comparison as Comparison
from jaxnet.gradcheck._report import GradcheckError as GradcheckError
from jaxnet.gradcheck._report import Report as Report
from jaxnet.gradcheck._report import Residuals as Residuals
from jaxnet.gradcheck._report import Row as Row

# The names of the checker's first generation, now the same types: a `compare` or
# `check_vjp` result is a `Comparison` (a `Report`), each of its leaves a `Row`.
FiniteDifferenceCheck = Comparison
GradientMismatchError = GradcheckError
LeafComparison = Row
LeafFiniteDifference = Row

__all__ = [
    "TRANSFORMS",
    "Comparison",
    "FiniteDifferenceCheck",
    "GradcheckError",
    "GradientMismatchError",
    "LeafComparison",
    "LeafFiniteDifference",
    "Report",
    "Residuals",
    "Row",
    "assert_close",
    "assert_vjp",
    "check",
    "check_layer",
    "check_vjp",
    "compare",
    "tolerances",
]
