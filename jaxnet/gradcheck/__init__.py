"""Hold hand-written gradients against automatic ones, finite differences and transforms.

`check(f, reference, *args)` is the one call: it compares f's custom VJP with `jax.vjp`
of a plain reference, with float64 finite differences, to second order, under the
cotangent contract and (asked for) jit, vmap, scan and checkpoint, and returns a `Report`
that prints as a table; `check_layer` does the same for a `jaxnet.layers` layer.

`compare`/`assert_close` (two gradient trees, leaf by leaf) and `check_vjp`/`assert_vjp`
(finite differences alone) are the smaller tools it grew from.
"""

from jaxnet.gradcheck import tolerances as tolerances
from jaxnet.gradcheck._battery import TRANSFORMS as TRANSFORMS
from jaxnet.gradcheck._check import check as check
from jaxnet.gradcheck._layer import check_layer as check_layer
from jaxnet.gradcheck._legacy import Comparison as Comparison
from jaxnet.gradcheck._legacy import FiniteDifferenceCheck as FiniteDifferenceCheck
from jaxnet.gradcheck._legacy import GradientMismatchError as GradientMismatchError
from jaxnet.gradcheck._legacy import LeafComparison as LeafComparison
from jaxnet.gradcheck._legacy import LeafFiniteDifference as LeafFiniteDifference
from jaxnet.gradcheck._legacy import assert_close as assert_close
from jaxnet.gradcheck._legacy import assert_vjp as assert_vjp
from jaxnet.gradcheck._legacy import check_vjp as check_vjp
from jaxnet.gradcheck._legacy import compare as compare
from jaxnet.gradcheck._report import GradcheckError as GradcheckError
from jaxnet.gradcheck._report import Report as Report
from jaxnet.gradcheck._report import Residuals as Residuals
from jaxnet.gradcheck._report import Row as Row

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
