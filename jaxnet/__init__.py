"""jaxnet: neural-network gradients written by hand in JAX, and proved right.

The public API. Modules hold the rest: `jaxnet.ops` (per-op hand VJPs), `jaxnet.reference`
(the same in plain jax.numpy), `jaxnet.initializers`, `jaxnet.gradcheck`, `jaxnet.train`.
"""

from jaxnet import checks as checks
from jaxnet import gradcheck as gradcheck
from jaxnet import initializers as initializers
from jaxnet import ops as ops
from jaxnet import reference as reference
from jaxnet.mlp import forward_and_backward as forward_and_backward
from jaxnet.mlp import init_mlp as init_mlp
from jaxnet.mlp import mlp as mlp
from jaxnet.mlp import mlp_loss as mlp_loss

__version__ = "0.1.0"

__all__ = [
    "checks",
    "forward_and_backward",
    "gradcheck",
    "init_mlp",
    "initializers",
    "mlp",
    "mlp_loss",
    "ops",
    "reference",
]
