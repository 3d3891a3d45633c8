"""Makemore's character MLP (Bengio et al. 2003) on `jaxnet.layers`, trained in chunks.

    ids [n, block] -> embedding(27, d) -> flatten -> dense(hidden, bias=False)
        -> batch_norm -> tanh -> dense(27) -> cross-entropy

`make_train_chunk` runs a number of optax steps as one jitted `lax.scan`, each on a
minibatch drawn with replacement from the training windows held on the device, its gradient
from `network_loss(grad="fused")`: the whole network's hand VJP. After training,
`calibrate` sets batch_norm's running statistics to those of the whole training split (the
lecture's "calibrate the batch norm at the end of training"), which eval mode then uses.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnet import initializers, layers, network
from jaxnet.training import loop
from jaxnet.typing import Array, ArrayLike, PyTree

BATCH_NORM = 3  # the index of batch_norm in the network; the layers before it are the trunk


class Model(NamedTuple):
    """The network, and its trunk: the layers whose output batch_norm normalizes."""

    net: layers.Layer
    trunk: layers.Layer


def _small(key, shape, dtype=jnp.float32):
    """The output layer's weights, lecun_normal / 10: the first logits are near 0, so the
    first loss is near log(27) rather than confidently wrong."""
    return 0.1 * initializers.lecun_normal(key, shape, dtype)


def model(*, vocab: int, embedding_dim: int, hidden: int) -> Model:
    """embedding -> flatten -> dense(hidden, no bias) -> batch_norm -> tanh -> dense(vocab)."""
    parts = [
        layers.embedding(vocab, embedding_dim),
        layers.flatten(),
        layers.dense(hidden, bias=False),  # batch_norm subtracts the mean: a bias would cancel
        layers.batch_norm(),
        layers.tanh(),
        layers.dense(vocab, init=_small),
    ]
    return Model(layers.serial(*parts), layers.serial(*parts[:BATCH_NORM]))


def from_lecture(params: dict[str, Array]) -> list[dict[str, Array]]:
    """`jaxnet.lessons.ninja`'s parameter dict as the params list of `model(...).net`."""
    return [
        {"table": params["C"]},
        {},
        {"w": params["W1"]},
        {"scale": params["bngain"], "bias": params["bnbias"]},
        {},
        {"w": params["W2"], "b": params["b2"]},
    ]


def loss(net: layers.Layer, params: PyTree, state: PyTree, x: ArrayLike, y: ArrayLike):
    """(mean cross-entropy in train mode, new state), by the fused hand VJP."""
    return network.network_loss(net, params, state, x, y, loss="cross_entropy", grad="fused")


def make_train_chunk(
    net: layers.Layer, optimizer: optax.GradientTransformation, *, batch_size: int, length: int
) -> Callable:
    """Jitted chunk(params, state, opt_state, key, x, y) -> (params, state, opt_state, losses).

    Runs `length` steps as one `lax.scan`; step t draws `batch_size` rows of (x, y) with
    replacement. losses [length] are each step's minibatch loss, before its update.
    """
    grad_fn = jax.value_and_grad(lambda p, s, xb, yb: loss(net, p, s, xb, yb), has_aux=True)

    def chunk(params, state, opt_state, key, x, y):
        def step(carry, step_key):
            params, state, opt_state = carry
            rows = jax.random.randint(step_key, (batch_size,), 0, x.shape[0])
            (value, state), grads = grad_fn(params, state, x[rows], y[rows])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), state, opt_state), value

        carry = (params, state, opt_state)
        carry, losses = jax.lax.scan(step, carry, jax.random.split(key, length))
        return (*carry, losses)

    return jax.jit(chunk)


def _blocks(x: np.ndarray, y: np.ndarray, block: int):
    """(x, y, weights) in blocks of `block` rows, the last one padded with weight 0: every
    block has one shape, so each jitted block function compiles once."""
    x, y, weights = loop.pad_rows(x, y, block)
    for i in range(0, len(x), block):
        yield x[i : i + block], y[i : i + block], weights[i : i + block]


@functools.partial(jax.jit, static_argnums=0)
def _loss_sum(net, params, state, x, y, weights):
    values, _ = loop.example_losses(net, params, state, x, y, "cross_entropy")
    return jnp.sum(values * weights)


def nll(
    net: layers.Layer, params: PyTree, state: PyTree, x: np.ndarray, y: np.ndarray, block=8192
) -> float:
    """Mean negative log-likelihood in eval mode, in nats per predicted character."""
    blocks = _blocks(x, y, block)
    return sum(float(_loss_sum(net, params, state, *b)) for b in blocks) / len(x)


@functools.partial(jax.jit, static_argnums=0)
def _moments(trunk, params, state, x, weights):
    h, _ = layers.apply(trunk, params, state, x)
    w = weights[:, None].astype(h.dtype)
    return jnp.sum(w * h, 0), jnp.sum(w * h * h, 0)


def calibrate(
    model: Model, params: PyTree, state: PyTree, x: np.ndarray, block=8192
) -> list[PyTree]:
    """The state with batch_norm's running mean and (unbiased) variance set from every row of x."""
    trunk = model.trunk, params[:BATCH_NORM], state[:BATCH_NORM]
    sums = [_moments(*trunk, xb, w) for xb, _, w in _blocks(x, np.zeros(len(x)), block)]
    s1 = np.sum([np.asarray(s, np.float64) for s, _ in sums], 0)
    s2 = np.sum([np.asarray(s, np.float64) for _, s in sums], 0)
    n = len(x)
    mean = s1 / n
    var = (s2 - n * mean**2) / (n - 1)
    dtype = state[BATCH_NORM]["mean"].dtype
    new = {"mean": jnp.asarray(mean, dtype), "var": jnp.asarray(var, dtype)}
    return [*state[:BATCH_NORM], new, *state[BATCH_NORM + 1 :]]


def logits_fn(net: layers.Layer, params: PyTree, state: PyTree) -> Callable[[Array], Array]:
    """contexts [n, block] -> logits [n, vocab] in eval mode, for `jaxnet.lessons.names.sample`."""
    return lambda contexts: layers.apply(net, params, state, contexts)[0]
