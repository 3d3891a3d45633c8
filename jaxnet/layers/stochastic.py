"""Stochastic layers: dropout, and a learned Bernoulli gate with a straight-through backward."""

import jax
import jax.numpy as jnp

from jaxnet import _checks
from jaxnet.layers import core


def dropout(rate: float) -> core.Layer:
    """Inverted dropout: in train mode each unit is zeroed with probability `rate` and the
    survivors are scaled by 1 / (1 - rate); in eval mode, the identity.

    Train mode needs `key`. Residual: the boolean keep-mask.
    """
    rate = _checks.number(rate, "dropout: rate")
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate={rate} must lie in [0, 1).")

    def forward(params, state, x, *, train=False, key=None):
        del params
        core.check_float("dropout", x)
        if not train or rate == 0:
            return x, None, state
        if key is None:
            raise core.LayerError(
                "dropout: train mode draws a mask and needs a PRNG key; pass key=... "
                "(e.g. jax.random.key(0)), or train=False for evaluation."
            )
        _checks.prng_key(key, "dropout")
        keep = jax.random.bernoulli(key, 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), jnp.zeros_like(x)), keep, state

    def backward(params, keep, g):
        del params
        if keep is None:  # eval mode: the identity
            return {}, g
        # y = keep * x / (1 - rate), linear in x: dx = keep * g / (1 - rate).
        return {}, jnp.where(keep, g / (1 - rate), jnp.zeros_like(g))

    return core.Layer(core.stateless_init, forward, backward, "dropout")


def bernoulli_gate(*, init_logit: float = 1.0) -> core.Layer:
    """A learned stochastic gate per feature: y = x * z, z ~ Bernoulli(sigmoid(logits)).

    Train mode draws z for every element (a fresh gate per example) and needs `key`; eval
    mode is deterministic: z = 1[sigmoid(logits) > 0.5], i.e. open where logits > 0.

    The sample has zero derivative in the logits almost everywhere, so jax.grad of the plain
    forward never trains them. The backward is the straight-through estimator instead, and
    `definition` is the forward whose jax.grad it is: x * (z + p - stop_gradient(p)), the
    same value (p - stop_gradient(p) is exactly 0) with dz/dlogits taken as dp/dlogits.

    Params: {"logits": [features]}, all `init_logit` (1.0: each gate open with p = 0.73).
    Residual: the input and the boolean gates.
    """

    init_logit = _checks.number(init_logit, "bernoulli_gate: init_logit")

    def init(key, input_shape, dtype=jnp.float32):
        del key
        params = {"logits": jnp.full((input_shape[-1],), init_logit, dtype)}
        return tuple(input_shape), params, {}

    def gates(params, x, train, key):
        logits = params["logits"]
        core.check_fits("bernoulli_gate", x, logits, "logits")
        if not train:
            return jnp.broadcast_to(logits > 0, jnp.shape(x))  # sigmoid(a) > 0.5 iff a > 0
        if key is None:
            raise core.LayerError(
                "bernoulli_gate: train mode draws the gates and needs a PRNG key; pass "
                "key=... (e.g. jax.random.key(0)), or train=False for the deterministic gates."
            )
        _checks.prng_key(key, "bernoulli_gate")
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits), jnp.shape(x))

    def forward(params, state, x, *, train=False, key=None):
        z = gates(params, x, train, key)
        return jnp.where(z, x, jnp.zeros_like(x)), (x, z), state

    def backward(params, residual, g):
        # y = x z. dx = g z exactly. z is a step function of the logits a (a sample, or the
        # threshold a > 0), whose derivative is 0 almost everywhere; straight-through takes
        # dz/da := dp/da = p (1 - p), p = sigmoid(a), so da_j = sum over examples of g x p (1 - p).
        # Its bias: the exact gradient of E_z[L] is p (1 - p) E[L(z_j = 1) - L(z_j = 0)];
        # the estimator puts dL/dz_j = g x_j at the sampled z in place of that difference,
        # which is exact only when L is linear in z_j.
        x, z = residual
        p = jax.nn.sigmoid(params["logits"])
        axes = tuple(range(g.ndim - 1))
        dlogits = jnp.sum(g * x, axis=axes) * (p * (1 - p))
        return {"logits": dlogits}, jnp.where(z, g, jnp.zeros_like(g))

    def definition(params, state, x, *, train=False, key=None):
        p = jax.nn.sigmoid(params["logits"])
        z = gates(params, x, train, key).astype(x.dtype)
        return x * (z + (p - jax.lax.stop_gradient(p))), state

    return core.Layer(init, forward, backward, "bernoulli_gate", definition=definition)
