"""Token ids to vectors, and back to a flat batch: makemore's C[X] and its embcat; GPT's
learned positions."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks
from jaxnet.layers import core


def embedding(vocab: int, features: int) -> core.Layer:
    """A lookup table: integer ids [...] -> rows [..., features] (makemore's C[X]).

    Params: {"table": [vocab, features]}, drawn from N(0, 1) as torch.nn.Embedding. The input
    is integer, so its cotangent is None. Ids outside [0, vocab) are refused on the host;
    under jit they cannot be read, and each is clamped into [0, vocab - 1] (-1 reads row 0,
    not the last row as negative indexing would), in the forward and the backward alike.
    """
    vocab = _checks.positive_int(vocab, "embedding: vocab")
    features = _checks.positive_int(features, "embedding: features")

    def init(key, input_shape, dtype=jnp.float32):
        return (
            (*input_shape, features),
            {"table": jax.random.normal(key, (vocab, features), dtype)},
            {},
        )

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(
                f"embedding: input has dtype {jnp.result_type(x)}; expected integer ids in "
                f"[0, {vocab}), e.g. x.astype('int32')."
            )
        if not isinstance(x, jax.core.Tracer) and np.size(x):
            values = np.asarray(x)
            if values.min() < 0 or values.max() >= vocab:
                raise core.LayerError(
                    f"embedding: ids must lie in [0, {vocab}); found values from "
                    f"{values.min()} to {values.max()}."
                )
        ids = jnp.clip(x, 0, vocab - 1)  # a no-op for the ids checked above
        return params["table"][ids], ids, state  # residual: the clamped ids

    def backward(params, ids, g):
        # out[..., :] = table[ids[...], :], so each row of the table collects the cotangents
        # of every position that looked it up: a scatter-add. The ids get no cotangent.
        table = params["table"]
        dtable = jnp.zeros_like(table).at[ids.reshape(-1)].add(g.reshape(-1, table.shape[1]))
        return {"table": dtable}, None

    return core.Layer(init, forward, backward, "embedding")


def flatten() -> core.Layer:
    """[batch, d1, d2, ...] -> [batch, d1 * d2 * ...]: makemore's embcat.

    The first axis is the batch: under `jax.vmap` over examples, map over `x[:, None]` so
    that each example keeps a batch axis of 1.
    """

    def init(key, input_shape, dtype=jnp.float32):
        del key, dtype
        return (input_shape[0], int(np.prod(input_shape[1:]))), {}, {}

    def forward(params, state, x, *, train=False, key=None):
        del params, train, key
        if jnp.ndim(x) < 1:
            raise core.LayerError("flatten: input is a scalar; expected [batch, ...].")
        # residual: a zero-byte array of shape [*x.shape, 0], to carry x's shape back.
        return x.reshape(x.shape[0], -1), jnp.zeros((*x.shape, 0), jnp.bool_), state

    def backward(params, shape_carrier, g):
        del params
        return {}, g.reshape(shape_carrier.shape[:-1])  # a reshape is undone by a reshape

    return core.Layer(init, forward, backward, "flatten")


def position_embedding(max_len: int, *, stddev: float = 0.02) -> core.Layer:
    """GPT's learned positions: adds table[t] to position t of a [batch, T, C] input.

    Params: {"table": [max_len, C]}, drawn from N(0, stddev^2) (0.02, as GPT-2's wpe).
    T may be anything up to max_len; a longer input is refused. A single example [T, C]
    works too (vmap).
    """
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"position_embedding: max_len={max_len!r} must be a positive int.")

    def init(key, input_shape, dtype=jnp.float32):
        table = stddev * jax.random.normal(key, (max_len, input_shape[-1]), dtype)
        return tuple(input_shape), {"table": table}, {}

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        table = params["table"]
        core.check_fits("position_embedding", x, table[0], "a table row")
        length = jnp.shape(x)[-2] if jnp.ndim(x) >= 2 else None
        if length is None or length > max_len:
            raise core.LayerError(
                f"position_embedding: input of shape {jnp.shape(x)} has {length} positions; "
                f"expected [batch, T, C] with T <= max_len={max_len}. Build the layer with a "
                "larger max_len, or cut the sequence."
            )
        return x + table[:length], None, state  # no residual: the backward needs only g

    def backward(params, residual, g):
        # out[..., t, :] = x[..., t, :] + table[t]: dx = g, and row t of the table collects
        # g summed over the batch; rows past T were not used and get 0.
        del residual
        rows = jnp.sum(g, axis=tuple(range(g.ndim - 2)))
        dtable = jnp.pad(rows, ((0, params["table"].shape[0] - rows.shape[0]), (0, 0)))
        return {"table": dtable}, g

    return core.Layer(init, forward, backward, "position_embedding")
