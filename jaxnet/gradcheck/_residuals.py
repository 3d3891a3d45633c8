"""What the backward pass keeps: bytes of residuals, from `jax.ad_checkpoint`'s own listing.

`jax.ad_checkpoint.print_saved_residuals` prints, for `jax.vjp(f, *args)`, every array the
backward needs and where it comes from; `saved_residuals` is the same list as data.
"""

from collections.abc import Callable

import numpy as np
from jax._src import ad_checkpoint

from jaxnet.gradcheck._report import Residuals


def _bytes(f: Callable, args) -> tuple[int, int, int]:
    saved = ad_checkpoint.saved_residuals(f, *args)
    sizes = [int(np.prod(aval.shape)) * aval.dtype.itemsize for aval, _ in saved]
    from_args = [s for s, (_, where) in zip(sizes, saved) if where.startswith("from the argument")]
    return sum(sizes), len(sizes), sum(from_args)


def audit(f: Callable, reference: Callable, args) -> Residuals:
    """The residuals of the hand VJP of f and of `jax.vjp` of reference, at args."""
    return Residuals(*_bytes(f, args), *_bytes(reference, args))
