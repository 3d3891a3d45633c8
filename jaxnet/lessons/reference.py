"""The same functions as `jaxnet.ops`, `jaxnet.mlp` and the benchmark's networks, in plain
jax.numpy: the one plain-JAX reference.

Nothing here has a custom VJP: `jax.grad` differentiates it, and the tests hold the hand
derivations against it. Keep it obvious rather than fast.
"""

import jax
import jax.numpy as jnp

from jaxnet.typing import Array, ArrayLike, Params


def linear(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None) -> Array:
    """x @ w + b."""
    y = jnp.asarray(x) @ w
    return y if b is None else y + b


def relu(x: ArrayLike) -> Array:
    """max(x, 0) with gradient 0 at 0 (`jnp.maximum` would give 0.5 there)."""
    return jnp.where(x > 0, x, 0.0).astype(jnp.result_type(x))


def mse(pred: ArrayLike, target: ArrayLike) -> Array:
    """mean((pred - target)^2), pred [n, 1] squeezed to a target [n]."""
    return jnp.mean(jnp.square(jnp.reshape(pred, jnp.shape(target)) - target))


def sum_squares(pred: ArrayLike, target: ArrayLike) -> Array:
    """sum((pred - target)^2), pred [n, 1] squeezed to a target [n]."""
    return jnp.sum(jnp.square(jnp.reshape(pred, jnp.shape(target)) - target))


def log_softmax(logits: ArrayLike) -> Array:
    """JAX's own log-softmax over the last axis, independent of `jaxnet.losses.log_softmax`."""
    return jax.nn.log_softmax(logits, axis=-1)


def softmax_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, label_smoothing: float = 0.0
) -> Array:
    """mean(-sum_j t_j log_softmax(logits)_j), t = (1 - s) onehot(label) + s / classes.

    NaN where a label is out of range.
    """
    classes = jnp.shape(logits)[-1]
    logp = log_softmax(logits)
    target = jax.nn.one_hot(labels, classes, dtype=logp.dtype)
    target = (1 - label_smoothing) * target + label_smoothing / classes
    valid = (labels >= 0) & (labels < classes)
    return jnp.mean(jnp.where(valid, -jnp.sum(target * logp, axis=-1), jnp.nan))


LOSSES = {"mse": mse, "sum_squares": sum_squares, "cross_entropy": softmax_cross_entropy}


def mlp(params: Params, x: ArrayLike) -> Array:
    """Linear layers with ReLU between them, nothing after the last."""
    for layer in params[:-1]:
        x = relu(linear(x, layer["w"], layer.get("b")))
    return linear(x, params[-1]["w"], params[-1].get("b"))


def mlp_loss(
    params: Params, x: ArrayLike, y: ArrayLike, *, loss: str = "mse", label_smoothing: float = 0.0
) -> Array:
    """The loss of `mlp(params, x)` against y."""
    if loss == "cross_entropy":
        return softmax_cross_entropy(mlp(params, x), y, label_smoothing=label_smoothing)
    return LOSSES[loss](mlp(params, x), y)


# ------------------------------------------------- the layers benchmark's networks, by hand

EPS = 1e-5  # jaxnet.layers' default for batch_norm and layer_norm
MOMENTUM = 0.1  # batch_norm's default, torch's BatchNorm1d


def relu_net_loss(params: Params, state, x: ArrayLike, y: ArrayLike):
    """serial(dense, relu, dense, relu, ..., dense) with cross-entropy: (loss, state)."""
    return mlp_loss(params[::2], x, y, loss="cross_entropy"), state


def bn_tanh_net_loss(params: Params, state, x: ArrayLike, y: ArrayLike):
    """serial(dense(no bias), batch_norm, tanh, ..., dense) in train mode, cross-entropy:
    (loss, new running statistics), as torch's BatchNorm1d updates them."""
    h, new_state, n = x, list(state), jnp.shape(x)[0]
    for i in range(0, len(params) - 1, 3):
        h = linear(h, params[i]["w"])
        mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
        bn = params[i + 1]
        h = jnp.tanh((h - mean) / jnp.sqrt(var + EPS) * bn["scale"] + bn["bias"])
        running = state[i + 1]
        new_state[i + 1] = {
            "mean": (1 - MOMENTUM) * running["mean"] + MOMENTUM * mean,
            "var": (1 - MOMENTUM) * running["var"] + MOMENTUM * var * (n / (n - 1)),
        }
    logits = linear(h, params[-1]["w"], params[-1]["b"])
    return softmax_cross_entropy(logits, y), jax.lax.stop_gradient(new_state)


def ln_gelu_net_loss(params: Params, state, x: ArrayLike, y: ArrayLike):
    """serial(dense, layer_norm, gelu, ..., dense) with cross-entropy: (loss, state)."""
    h = x
    for i in range(0, len(params) - 1, 3):
        h = linear(h, params[i]["w"], params[i]["b"])
        mean, var = jnp.mean(h, axis=-1, keepdims=True), jnp.var(h, axis=-1, keepdims=True)
        ln = params[i + 1]
        h = jax.nn.gelu((h - mean) / jnp.sqrt(var + EPS) * ln["scale"] + ln["bias"])
    return softmax_cross_entropy(linear(h, params[-1]["w"], params[-1]["b"]), y), state


# ------------------------------------------------------------ a GPT, nanoGPT's code by hand


def layer_norm(x: ArrayLike, params) -> Array:
    """(x - mean) / sqrt(var + EPS) * scale + bias over the last axis."""
    mean, var = jnp.mean(x, axis=-1, keepdims=True), jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + EPS) * params["scale"] + params["bias"]


def causal_self_attention(qkv: ArrayLike, heads: int) -> Array:
    """nanoGPT's attention between its c_attn and c_proj, the whole T x T at once:
    [B, T, 3C] -> [B, T, C]."""
    b, t, c = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = (
        a.reshape(b, t, heads, c // heads).transpose(0, 2, 1, 3) for a in jnp.split(qkv, 3, -1)
    )
    att = q @ k.transpose(0, 1, 3, 2) * (c // heads) ** -0.5
    att = jnp.where(jnp.tril(jnp.ones((t, t), bool)), att, -jnp.inf)
    y = jax.nn.softmax(att, axis=-1) @ v
    return y.transpose(0, 2, 1, 3).reshape(b, t, c)


def gpt_loss(params: Params, state, ids: ArrayLike, labels: ArrayLike, *, heads: int):
    """The GPT of `jaxnet.layers`: embedding, position_embedding, then pairs of pre-norm
    blocks residual(layer_norm, dense(3C), attention(heads), dense(C)) and
    residual(layer_norm, dense(4C), gelu, dense(C)), layer_norm, dense(vocab); mean
    cross-entropy of the next-token logits [B, T, vocab]: (loss, state)."""
    embed, positions, *blocks, final_norm, head = params
    h = embed["table"][ids] + positions["table"][: jnp.shape(ids)[-1]]
    for attn, mlp_ in zip(blocks[::2], blocks[1::2]):
        qkv = linear(layer_norm(h, attn[0]), attn[1]["w"], attn[1]["b"])
        h = h + linear(causal_self_attention(qkv, heads), attn[3]["w"], attn[3]["b"])
        hidden = jax.nn.gelu(linear(layer_norm(h, mlp_[0]), mlp_[1]["w"], mlp_[1]["b"]))
        h = h + linear(hidden, mlp_[3]["w"], mlp_[3]["b"])
    logits = linear(layer_norm(h, final_norm), head["w"], head["b"])
    return softmax_cross_entropy(logits, labels), state


def nanogpt_loss(params: Params, state, ids: ArrayLike, labels: ArrayLike, *, heads: int):
    """`jaxnet.gpt.gpt` (dropout 0, with or without biases) as nanoGPT's model.py writes it:
    wte and wpe, pre-norm blocks, ln_f, and a head tied to wte; the mean cross-entropy of
    the [B, T, vocab] logits: (loss, state)."""

    def dense(x, p):
        return linear(x, p["w"], p.get("b"))

    def norm(x, p):
        return layer_norm(x, {"scale": p["scale"], "bias": p.get("bias", 0.0)})

    table = params["table"]
    positions, *blocks, final_norm = params["body"]
    h = table[ids] + positions["table"][: jnp.shape(ids)[-1]]
    for attn, mlp_ in zip(blocks[::2], blocks[1::2]):
        h = h + dense(causal_self_attention(dense(norm(h, attn[0]), attn[1]), heads), attn[3])
        hidden = jax.nn.gelu(dense(norm(h, mlp_[0]), mlp_[1]), approximate=False)
        h = h + dense(hidden, mlp_[3])
    return softmax_cross_entropy(norm(h, final_norm) @ table.T, labels), state
