"""Layers as pairs of pure rules: lesson 003's Module refactor, done the JAX way.

Each constructor returns a `Layer`, a NamedTuple of pure functions:

    init(key, input_shape, dtype=jnp.float32) -> (output_shape, params, state)
    forward(params, state, x, *, train, key) -> (out, residual, new_state)
    backward(params, residual, g) -> (dparams, dx)

`forward` is plain jax.numpy and keeps the smallest residual its `backward` needs;
`backward` is derived by hand, with the derivation beside it. `serial(*layers)` is again a
Layer whose backward walks the layers in reverse, and `jaxnet.network_fn` and
`jaxnet.network_loss` fuse any such network into one `jax.custom_vjp`.

Residuals are shared for free: a ReLU or tanh keeps its output, which is also the next
dense layer's input, so the fused chain holds that array once.

Where things live: `core` (the contract, `serial`, `residual`, `apply`, `run`), then one
module per family: `dense`, `activations`, `norms`, `stochastic`, `embedding` (with GPT's
`position_embedding`), `attention`, `reversible` (a stack that rebuilds its activations). To
write your own layer, copy a neighbour from its family's module.
"""

from jaxnet.layers.activations import gelu as gelu
from jaxnet.layers.activations import general_relu as general_relu
from jaxnet.layers.activations import leaky_relu as leaky_relu
from jaxnet.layers.activations import relu as relu
from jaxnet.layers.activations import tanh as tanh
from jaxnet.layers.attention import attention as attention
from jaxnet.layers.core import Layer as Layer
from jaxnet.layers.core import LayerError as LayerError
from jaxnet.layers.core import apply as apply
from jaxnet.layers.core import init as init
from jaxnet.layers.core import plain as plain
from jaxnet.layers.core import residual as residual
from jaxnet.layers.core import run as run
from jaxnet.layers.core import serial as serial
from jaxnet.layers.dense import dense as dense
from jaxnet.layers.embedding import embedding as embedding
from jaxnet.layers.embedding import flatten as flatten
from jaxnet.layers.embedding import position_embedding as position_embedding
from jaxnet.layers.embedding import tied_embedding as tied_embedding
from jaxnet.layers.norms import batch_norm as batch_norm
from jaxnet.layers.norms import layer_norm as layer_norm
from jaxnet.layers.reversible import reversible as reversible
from jaxnet.layers.stochastic import bernoulli_gate as bernoulli_gate
from jaxnet.layers.stochastic import dropout as dropout

__all__ = [
    "Layer",
    "LayerError",
    "apply",
    "attention",
    "batch_norm",
    "bernoulli_gate",
    "dense",
    "dropout",
    "embedding",
    "flatten",
    "gelu",
    "general_relu",
    "init",
    "layer_norm",
    "leaky_relu",
    "plain",
    "position_embedding",
    "relu",
    "residual",
    "reversible",
    "run",
    "serial",
    "tanh",
    "tied_embedding",
]
