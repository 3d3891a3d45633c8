"""jaxnet: neural-network gradients written by hand in JAX, and proved right.

The public API. Modules hold the rest: `jaxnet.layers` (each layer a forward rule and a
hand-derived backward; `serial` networks), `jaxnet.losses`, `jaxnet.ops` (per-op hand
VJPs), `jaxnet.reference` (plain jax.numpy, the tests' oracle), `jaxnet.initializers`,
`jaxnet.gradcheck` (`check`, `check_layer`), `jaxnet.train`. `jaxnet.testing` (pytest
assertions, hypothesis strategies) is imported on its own: it needs hypothesis.
"""

from jaxnet import checks as checks
from jaxnet import gradcheck as gradcheck
from jaxnet import initializers as initializers
from jaxnet import layers as layers
from jaxnet import losses as losses
from jaxnet import ops as ops
from jaxnet import reference as reference
from jaxnet.mlp import forward_and_backward as forward_and_backward
from jaxnet.mlp import init_mlp as init_mlp
from jaxnet.mlp import mlp as mlp
from jaxnet.mlp import mlp_loss as mlp_loss
from jaxnet.mlp import mlp_network as mlp_network
from jaxnet.network import network_loss as network_loss

__version__ = "0.1.0"

__all__ = [
    "checks",
    "forward_and_backward",
    "gradcheck",
    "init_mlp",
    "initializers",
    "layers",
    "losses",
    "mlp",
    "mlp_loss",
    "mlp_network",
    "network_loss",
    "ops",
    "reference",
]
