"""A GPT on `jaxnet.layers`: nanoGPT's model, every backward written by hand.

    tied_embedding(vocab, C,                      # wte, and the head that shares its table
        position_embedding(block_size),           # wpe
        [dropout],
        residual(layer_norm, dense(3C), attention(heads), dense(C), [dropout])   # x n_layer,
        residual(layer_norm, dense(4C), gelu, dense(C), [dropout])               # pre-norm
        layer_norm)                               # ln_f

`gpt(...)` returns that network as one `Layer`, initialised as nanoGPT does: every weight
and both tables from N(0, 0.02^2), the two residual projections of each block from
N(0, (0.02 / sqrt(2 n_layer))^2), biases 0, norms' scale 1. `jaxnet.network_loss(net, ...,
loss="cross_entropy")` trains it with its whole VJP fused into one `jax.custom_vjp`, and
`generate` samples from it.

Differences from nanoGPT's model.py, all deliberate: dropout is applied after the
embeddings and each block's output projection, not to the attention weights (the attention
op never forms them); GELU is the exact erf form, as torch's `nn.GELU()`.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, layers
from jaxnet.typing import Array, PyTree


def _normal(stddev: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return stddev * jax.random.normal(key, shape, dtype)

    return init


def gpt(
    vocab_size: int,
    *,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    block_size: int = 64,
    bias: bool = False,
    dropout: float = 0.0,
) -> layers.Layer:
    """nanoGPT's GPT as a jaxnet network: ids [batch, T] -> logits [batch, T, vocab_size].

    Args:
      vocab_size: the number of token ids.
      n_layer: transformer blocks (each an attention and an MLP sub-block).
      n_head: attention heads; n_embd must be a multiple of it.
      n_embd: the model width C.
      block_size: the longest context (the position table's rows); T <= block_size.
      bias: biases in the dense layers and layer norms (nanoGPT's `bias` flag).
      dropout: the drop rate after the embeddings and each sub-block (train mode only).

    Params: {"table": [vocab_size, C], "body": [position_embedding, (dropout,)
    block 1 attention, block 1 MLP, ..., layer_norm]}, each block a residual's list.
    """
    vocab_size = _checks.positive_int(vocab_size, "gpt: vocab_size")
    n_layer = _checks.positive_int(n_layer, "gpt: n_layer")
    n_head = _checks.positive_int(n_head, "gpt: n_head")
    c = _checks.positive_int(n_embd, "gpt: n_embd")
    block_size = _checks.positive_int(block_size, "gpt: block_size")
    bias = _checks.boolean(bias, "gpt: bias")
    dropout = _checks.number(dropout, "gpt: dropout")
    if c % n_head:
        raise ValueError(f"gpt: n_embd={c} must be a multiple of n_head={n_head}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"gpt: dropout={dropout} must lie in [0, 1).")
    weight, projection = _normal(0.02), _normal(0.02 / math.sqrt(2 * n_layer))
    drop = [layers.dropout(dropout)] if dropout else []

    def dense(features: int, init: Callable) -> layers.Layer:
        return layers.dense(features, bias=bias, init=init)

    blocks = []
    for _ in range(n_layer):
        blocks += [
            layers.residual(layers.layer_norm(bias=bias), dense(3 * c, weight),
                            layers.attention(n_head), dense(c, projection), *drop),
            layers.residual(layers.layer_norm(bias=bias), dense(4 * c, weight),
                            layers.gelu(approximate=False), dense(c, projection), *drop),
        ]  # fmt: skip
    return layers.tied_embedding(
        vocab_size, c, layers.position_embedding(block_size), *drop, *blocks,
        layers.layer_norm(bias=bias),
    )  # fmt: skip


def count_parameters(params: PyTree) -> int:
    """The number of scalars in params (the tied table counted once, as it is stored)."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def decay_mask(params: PyTree) -> PyTree:
    """True for the leaves nanoGPT's AdamW decays: those with two or more axes (the weights
    and the tables), False for biases and norm scales."""
    return jax.tree_util.tree_map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def make_generate(net: layers.Layer, block_size: int, steps: int) -> Callable:
    """A jitted sampler: generate(params, state, prompt, key, temperature) -> ids [steps].

    Each step runs the network on the last block_size ids (a fixed window, so it compiles
    once), and draws the next id from softmax(logits / temperature) at the last position.
    prompt is a non-empty [n] int array; the ids returned are the new ones only.
    """
    steps = _checks.positive_int(steps, "generate: steps")

    @jax.jit
    def generate(params, state, prompt, key, temperature):
        kept = prompt[-block_size:]
        window = jnp.zeros((block_size,), jnp.int32).at[: kept.shape[0]].set(kept)
        filled = jnp.int32(kept.shape[0])

        def step(carry, step_key):
            window, filled = carry
            logits, _ = layers.apply(net, params, state, window[None])
            last = logits[0, filled - 1] / temperature
            token = jax.random.categorical(step_key, last).astype(jnp.int32)
            full = filled == block_size
            # Append: at `filled` while the window has room, else shift left and put it last.
            shifted = jnp.where(full, jnp.roll(window, -1), window)
            window = shifted.at[jnp.where(full, block_size - 1, filled)].set(token)
            return (window, jnp.minimum(filled + 1, block_size)), token

        _, tokens = jax.lax.scan(step, (window, filled), jax.random.split(key, steps))
        return tokens

    return generate


def generate(
    net: layers.Layer,
    params: PyTree,
    state: PyTree,
    prompt,
    steps: int,
    key,
    *,
    block_size: int,
    temperature: float = 1.0,
) -> Array:
    """`steps` new ids sampled after prompt ([n] ids), each from softmax(logits / temperature).

    Compiles a sampler each call; keep `make_generate`'s for many calls.
    """
    temperature = _checks.number(temperature, "generate: temperature")
    if not temperature > 0:
        raise ValueError(f"generate: temperature={temperature} must be > 0.")
    prompt = jnp.asarray(prompt, jnp.int32).reshape(-1)
    if prompt.size == 0:
        raise ValueError("generate: the prompt is empty; give at least one id, e.g. [0].")
    sampler = make_generate(net, block_size, steps)
    return sampler(params, state, prompt, key, jnp.float32(temperature))
