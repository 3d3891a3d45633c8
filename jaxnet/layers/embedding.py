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


def _unembedding() -> core.Layer:
    """The tied head: [..., C] -> [..., vocab] logits, x @ table.T, with the table of the
    embedding that opened the network (params {"table": [vocab, C]})."""

    def init(key, input_shape, dtype=jnp.float32):
        raise core.LayerError("the tied head takes its table from tied_embedding; build that.")

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        table = params["table"]
        core.check_fits("tied_embedding's head", x, table.T, "the table's transpose")
        return x @ table.T, x, state  # residual: the input

    def backward(params, x, g):
        # logits = x @ table.T: dx = g @ table and dtable = g.T @ x over every position,
        # with the positions merged into one axis first (as ops.linear_backward: XLA then
        # contracts the first axis in place instead of copying g transposed).
        table = params["table"]
        rows = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        return {"table": jnp.tensordot(*rows, axes=(0, 0))}, g @ table

    return core.Layer(init, forward, backward, "tied_head")


def _identity() -> core.Layer:
    """serial() of no layers: x unchanged, params and state [] (a bigram model's body)."""

    def init(key, input_shape, dtype=jnp.float32):
        del key, dtype
        return tuple(input_shape), [], []

    def compose(child, params, state, x, *, train=False, key=None):
        del child, params, train, key
        return x, [], state

    def backward(params, residuals, g):
        del params, residuals
        return [], g

    return core.combinator("serial", init, compose, backward)


def tied_embedding(
    vocab: int, features: int, *body: core.Layer, stddev: float = 0.02
) -> core.Layer:
    """Ids -> embedding -> body -> logits through the SAME table: GPT-2's weight tying.

    The network opens with a lookup in table [vocab, features] and closes with a head whose
    weight is that table's transpose (nanoGPT's `lm_head.weight = wte.weight`), so the
    output is [..., vocab] logits. The table's gradient is both uses' gradients, summed by
    hand in the backward: the head's g.T @ x plus the lookup's scatter-add.

    Args:
      vocab: the number of ids (and of logits).
      features: the embedding width, which body must keep.
      *body: the layers between lookup and head (position_embedding, blocks, layer_norm).
      stddev: the table's init, N(0, stddev^2) (0.02, as GPT-2's wte).

    Params: {"table": [vocab, features], "body": [one entry per body layer]}; state: body's.
    With no body it is a bigram model: logits = table[ids] @ table.T.
    """
    vocab = _checks.positive_int(vocab, "tied_embedding: vocab")
    features = _checks.positive_int(features, "tied_embedding: features")
    lookup, head = embedding(vocab, features), _unembedding()
    inner = core.serial(*body) if body else _identity()

    def init(key, input_shape, dtype=jnp.float32):
        table_key, body_key = jax.random.split(key)
        shape, body_params, state = inner.init(body_key, (*input_shape, features), dtype)
        if tuple(shape) != (*input_shape, features):
            raise core.LayerError(
                f"tied_embedding: the body maps {(*input_shape, features)} to {tuple(shape)}; "
                f"the tied head needs [..., {features}] (end the body with layers that keep it)."
            )
        table = stddev * jax.random.normal(table_key, (vocab, features), dtype)
        return (*input_shape, vocab), {"table": table, "body": body_params}, state

    def compose(child, params, state, x, *, train=False, key=None):
        if not isinstance(params, dict) or set(params) != {"table", "body"}:
            raise core.LayerError(
                f"tied_embedding: params must be a dict with keys ['body', 'table'], got "
                f"{sorted(params) if isinstance(params, dict) else type(params).__name__}; "
                "build them with the network's init."
            )
        table = {"table": params["table"]}
        h, r_lookup, _ = child(lookup)(table, {}, x, train=train, key=None)
        h, r_body, new_state = inner.compose(child, params["body"], state, h, train=train, key=key)
        logits, r_head, _ = child(head)(table, {}, h, train=train, key=None)
        return logits, (r_lookup, r_body, r_head), new_state

    def backward(params, residuals, g):
        r_lookup, r_body, r_head = residuals
        table = {"table": params["table"]}
        from_head, dh = head.backward(table, r_head, g)
        body_grads, dh = inner.backward(params["body"], r_body, dh)
        from_lookup, _ = lookup.backward(table, r_lookup, dh)
        return {"table": from_head["table"] + from_lookup["table"], "body": body_grads}, None

    return core.combinator("tied_embedding", init, compose, backward)
