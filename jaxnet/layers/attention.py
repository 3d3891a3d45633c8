"""Multi-head self-attention without parameters: nanoGPT's attention is
serial(dense(3 * C), attention(heads), dense(C)).

The rules are `jaxnet.ops.attention_forward` and `attention_backward`: a blockwise online
softmax whose residual is the input, the output and one logsumexp per row, nothing T x T.
"""

import jax.numpy as jnp
import numpy as np

from jaxnet import ops
from jaxnet.layers import core


def _heads(x, heads: int):
    """[..., T, C] -> [..., T, heads, C // heads]: head h holds features h*D..(h+1)*D - 1."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def _check_input(x, heads: int) -> None:
    core.check_float("attention", x)
    width = jnp.shape(x)[-1] if jnp.ndim(x) else 0
    if jnp.ndim(x) not in (2, 3) or width % (3 * heads):
        raise core.LayerError(
            f"attention: input of shape {jnp.shape(x)}; expected [batch, time, 3 * C] (query, "
            f"key and value side by side, as from dense(3 * C)) with C divisible by "
            f"heads={heads}."
        )


def attention(heads: int, *, causal: bool = True, block_size: int | None = None) -> core.Layer:
    """Self-attention of [batch, time, 3C] -> [batch, time, C], no params (GPT's c_attn is
    the dense(3C) before it, its c_proj the dense(C) after).

    The last axis holds query, key and value side by side, each split into `heads` heads of
    C // heads features in nanoGPT's order (head h is features h*D to (h+1)*D - 1). The
    forward is `jaxnet.ops.attention_forward` and the backward `attention_backward`:
    blockwise, with causal blocks above the diagonal skipped in both passes. A single
    example [time, 3C] works too (vmap).

    Args:
      heads: attention heads; C must be a multiple of it.
      causal: each position sees itself and the positions before it (GPT).
      block_size: the op's largest block (default 128).

    Residual: the input, the output and the logsumexp per row: O(T), nothing T x T.
    """
    if not isinstance(heads, (int, np.integer)) or heads < 1:
        raise ValueError(f"attention: heads={heads!r} must be a positive int.")
    options = dict(is_causal=causal, block_size=block_size)

    def init(key, input_shape, dtype=jnp.float32):
        del key, dtype
        if input_shape[-1] % (3 * heads):
            raise core.LayerError(
                f"attention: input width {input_shape[-1]} must be 3 * C with C divisible by "
                f"heads={heads}; put dense(3 * C) before it."
            )
        return (*input_shape[:-1], input_shape[-1] // 3), {}, {}

    def forward(params, state, x, *, train=False, key=None):
        del params, train, key
        _check_input(x, heads)
        q, k, v = (_heads(part, heads) for part in jnp.split(x, 3, axis=-1))
        out, lse = ops.attention_forward(q, k, v, **options)
        return out.reshape(*out.shape[:-2], -1), (x, out, lse), state

    def backward(params, residual, g):
        # q, k and v are slices of x, so dx is their cotangents side by side.
        del params
        x, out, lse = residual
        q, k, v = (_heads(part, heads) for part in jnp.split(x, 3, axis=-1))
        grads = ops.attention_backward(q, k, v, out, lse, _heads(g, heads), **options)
        return {}, jnp.concatenate([d.reshape(g.shape) for d in grads], axis=-1)

    return core.Layer(init, forward, backward, "attention")
