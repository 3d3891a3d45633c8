"""jaxnet: neural-network gradients written by hand in JAX, and proved right.

Each layer is a pair of pure rules, a forward that keeps the smallest residual and a
hand-derived backward, and any `serial` network gets its whole VJP fused into one
`jax.custom_vjp`, checked against `jax.grad`. The names here are the core; the modules
hold the rest, each one idea:

  building      layers, losses, network_fn, network_loss, vjp (the one custom_vjp factory),
                initializers, lsuv; the MLP: init_mlp, mlp, mlp_loss, mlp_network,
                forward_and_backward; ops (single ops with hand VJPs)
  checking      gradcheck (check, check_layer), reference (lessons.reference); testing
                (pytest assertions, hypothesis strategies: import it on its own, it needs
                hypothesis)
  training/     loop (jitted epochs, optimizers), job (the main job as a function), config,
                checkpoint, data, parallel, files (atomic writes)
  lessons/      reference, matmul, stats, names, bigram, ninja, makemore
  text          character corpora for language models: Debian's fortunes or a UTF-8 file
  measuring     timing, profiling

Modules whose names start with an underscore are internal. The old flat paths
(`jaxnet.trainer`, `jaxnet.train`, `jaxnet.data`, ...) still import the moved modules
themselves; `jaxnet._moved` lists them.
"""

from jaxnet import _moved
from jaxnet import gradcheck as gradcheck
from jaxnet import initializers as initializers
from jaxnet import layers as layers
from jaxnet import losses as losses
from jaxnet import ops as ops
from jaxnet import text as text
from jaxnet.lessons import reference as reference
from jaxnet.mlp import forward_and_backward as forward_and_backward
from jaxnet.mlp import init_mlp as init_mlp
from jaxnet.mlp import mlp as mlp
from jaxnet.mlp import mlp_loss as mlp_loss
from jaxnet.mlp import mlp_network as mlp_network
from jaxnet.network import network_fn as network_fn
from jaxnet.network import network_loss as network_loss

_moved.install()  # `import jaxnet.trainer` and the other old paths, imported when asked for

__version__ = "0.1.0"

__all__ = [
    "forward_and_backward",
    "gradcheck",
    "init_mlp",
    "initializers",
    "layers",
    "losses",
    "mlp",
    "mlp_loss",
    "mlp_network",
    "network_fn",
    "network_loss",
    "ops",
    "reference",
    "text",
]
