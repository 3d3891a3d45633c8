"""The networks a user would write by hand in jax.numpy: the benchmark's autodiff baselines.

No checks, no NaN guards, no custom VJPs: the forward as a researcher types it, for
`jax.grad` to differentiate. Each takes the same params as the jaxnet network it is timed
against, so both run on the same arrays.
"""

import jax
import jax.numpy as jnp

EPS = 1e-5  # jaxnet.layers' default for batch_norm and layer_norm
MOMENTUM = 0.1


def cross_entropy(logits, labels):
    """Mean -log softmax(logits)[label]."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def mse(pred, target):
    return jnp.mean(jnp.square(pred.reshape(target.shape) - target))


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def mlp_loss(params, x, y, *, loss):
    """A ReLU MLP over `jaxnet.init_mlp`'s params: [{"w", "b"}, ...]."""
    h = x
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return LOSSES[loss](h @ params[-1]["w"] + params[-1]["b"], y)


def relu_net_loss(params, state, x, y):
    """serial(dense, relu, dense, relu, ..., dense) with cross-entropy: (loss, state)."""
    return mlp_loss(params[::2], x, y, loss="cross_entropy"), state


def bn_tanh_net_loss(params, state, x, y):
    """serial(dense(no bias), batch_norm, tanh, ..., dense) in train mode, cross-entropy:
    (loss, new running statistics), as torch's BatchNorm1d updates them."""
    h, new_state = x, list(state)
    n = x.shape[0]
    for i in range(0, len(params) - 1, 3):
        h = h @ params[i]["w"]
        mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
        bn = params[i + 1]
        h = jnp.tanh((h - mean) / jnp.sqrt(var + EPS) * bn["scale"] + bn["bias"])
        running = state[i + 1]
        new_state[i + 1] = {
            "mean": (1 - MOMENTUM) * running["mean"] + MOMENTUM * mean,
            "var": (1 - MOMENTUM) * running["var"] + MOMENTUM * var * (n / (n - 1)),
        }
    logits = h @ params[-1]["w"] + params[-1]["b"]
    return cross_entropy(logits, y), jax.lax.stop_gradient(new_state)


def ln_gelu_net_loss(params, state, x, y):
    """serial(dense, layer_norm, gelu, ..., dense) with cross-entropy: (loss, state)."""
    h = x
    for i in range(0, len(params) - 1, 3):
        h = h @ params[i]["w"] + params[i]["b"]
        mean, var = jnp.mean(h, axis=-1, keepdims=True), jnp.var(h, axis=-1, keepdims=True)
        ln = params[i + 1]
        h = jax.nn.gelu((h - mean) / jnp.sqrt(var + EPS) * ln["scale"] + ln["bias"])
    return cross_entropy(h @ params[-1]["w"] + params[-1]["b"], y), state
