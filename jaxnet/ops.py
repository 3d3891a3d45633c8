"""Ops with hand-derived VJPs, each registered with `jax.custom_vjp`.

Every op is three definitions side by side: the forward, `_op_fwd` (the forward plus the
smallest residual the backward needs) and `_op_bwd` (the derivation, as a comment). The
backward math sits in `*_backward` helpers; `jaxnet.layers.dense` uses `linear_backward`,
and the losses' rules live in `jaxnet.losses`. Whole networks are `jaxnet.layers`.

Forward-mode autodiff applied to an op (`jax.jvp`, `jax.jacfwd`) cannot pass through a
`custom_vjp`: JAX raises "can't apply forward-mode autodiff (jvp) to a custom_vjp
function." Reverse mode works (`jax.grad`, `jax.vjp`, `jax.jacrev`), and so do
reverse-over-reverse and forward-over-reverse (`jax.hessian`).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, losses
from jaxnet.typing import Array, ArrayLike

# ----------------------------------------------------------------------------- linear


def linear_backward(x: Array, w: Array, g: Array) -> tuple[Array, Array, Array]:
    """Cotangents (dx, dw, db) of y = x @ w + b for the output cotangent g."""
    # y_bj = sum_i x_bi w_ij + b_j, so
    #   dx_bi = sum_j g_bj w_ij  -> g @ w.T
    #   dw_ij = sum_b x_bi g_bj  -> x.T @ g   (summed over every leading axis)
    #   db_j  = sum_b g_bj       -> g summed over the batch axes, never over j
    # The leading axes are merged first: contracting [B, T, i] over (B, T) makes XLA copy x
    # transposed, as large as x; [B * T, i] over its first axis needs no copy.
    batch_axes = tuple(range(g.ndim - 1))
    rows = (-1, x.shape[-1]), (-1, g.shape[-1])
    dw = jnp.tensordot(x.reshape(rows[0]), g.reshape(rows[1]), axes=(0, 0))
    return g @ w.T, dw, jnp.sum(g, axis=batch_axes)


@jax.custom_vjp
def _affine(x, w, b):
    return x @ w + b


def _affine_fwd(x, w, b):
    return _affine(x, w, b), (x, w)  # b is not needed: db depends on g alone


def _affine_bwd(res, g):
    return linear_backward(*res, g)


_affine.defvjp(_affine_fwd, _affine_bwd)


@jax.custom_vjp
def _matmul(x, w):
    return x @ w


def _matmul_fwd(x, w):
    return _matmul(x, w), (x, w)


def _matmul_bwd(res, g):
    dx, dw, _ = linear_backward(*res, g)
    return dx, dw


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def linear(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None) -> Array:
    """The lessons' `lin`: x @ w + b.

    Args:
      x: inputs [..., fan_in].
      w: weight [fan_in, fan_out].
      b: optional bias [fan_out].

    Returns:
      [..., fan_out].
    """
    if jnp.ndim(w) != 2 or jnp.ndim(x) < 1 or jnp.shape(x)[-1] != jnp.shape(w)[0]:
        raise ValueError(
            f"linear: x of shape {jnp.shape(x)} does not fit w of shape {jnp.shape(w)}; "
            "expected x [..., fan_in] and w [fan_in, fan_out]."
        )
    if b is None:
        return _matmul(x, w)
    if jnp.shape(b) != (jnp.shape(w)[1],):
        raise ValueError(
            f"linear: b has shape {jnp.shape(b)}; expected ({jnp.shape(w)[1]},) for w of "
            f"shape {jnp.shape(w)}."
        )
    return _affine(x, w, b)


# ------------------------------------------------------------------------------- relu


def relu_backward(mask: Array, g: Array) -> Array:
    """Cotangent of relu's input given the mask x > 0 (equivalently relu(x) > 0)."""
    # d relu(x)/dx = 1[x > 0]; at exactly 0 the gradient is 0, as jax.nn.relu.
    return jnp.where(mask, g, jnp.zeros_like(g))


@jax.custom_vjp
def relu(x: ArrayLike) -> Array:
    """max(x, 0), with gradient 0 at exactly 0 and NaN kept NaN (as `jax.nn.relu`)."""
    return jax.nn.relu(x)


def _relu_fwd(x):
    return relu(x), x > 0  # residual: a boolean mask, a quarter of float32 x's bytes


def _relu_bwd(mask, g):
    return (relu_backward(mask, g),)


relu.defvjp(_relu_fwd, _relu_bwd)


# ------------------------------------------------------------------------------ losses
# The rules live in `jaxnet.losses`; each op here is one custom_vjp made from them.


def _regression(rule: losses.Loss, pred: ArrayLike, target: ArrayLike) -> Array:
    _checks.check_regression_target(jnp.shape(pred), target, jnp.result_type(pred), rule.name)
    return losses.as_op(rule)(pred, target)


def mse(pred: ArrayLike, target: ArrayLike) -> Array:
    """Mean squared error: mean((pred - target)^2), as lesson 003's `mse`.

    pred is shaped like the float target, or [n, 1] for a target [n]; returns a scalar.
    """
    return _regression(losses.mse(), pred, target)


def sum_squares(pred: ArrayLike, target: ArrayLike) -> Array:
    """Sum of squared errors: the PyTorch tutorial's `(y_pred - y).pow(2).sum()`.

    pred is shaped like the float target, or [n, 1] for a target [n]; returns a scalar.
    """
    return _regression(losses.sum_squares(), pred, target)


@jax.custom_vjp
def log_softmax(logits: ArrayLike) -> Array:
    """log(softmax(logits)) over the last axis, by the stable log-sum-exp."""
    return losses.log_softmax(logits)


def _log_softmax_fwd(logits):
    out = losses.log_softmax(logits)
    return out, out  # softmax = exp(out): no need to keep the logits


def _log_softmax_bwd(out, g):
    # out_i = z_i - lse(z), d lse/dz_j = softmax_j, so
    # dz_j = g_j - softmax_j * sum_i g_i.
    return (g - jnp.exp(out) * jnp.sum(g, axis=-1, keepdims=True),)


log_softmax.defvjp(_log_softmax_fwd, _log_softmax_bwd)


def softmax_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, label_smoothing: float = 0.0
) -> Array:
    """Mean cross-entropy of softmax(logits) against integer labels.

    Args:
      logits: [..., classes] unnormalised log-probabilities.
      labels: integer classes [...] in [0, classes). Checked on the host when concrete;
        under `jax.jit` an out-of-range label makes the loss and its gradient NaN.
      label_smoothing: s in [0, 1): the target puts 1 - s on the label and spreads s
        evenly over all classes (Szegedy et al. 2016). 0 is plain cross-entropy.

    Returns:
      A scalar.
    """
    _checks.check_labels(jnp.shape(logits), labels, "softmax_cross_entropy")
    return losses.as_op(losses.cross_entropy(label_smoothing))(logits, labels)


# --------------------------------------------------------------------------- attention
# FlashAttention (Dao et al. 2022; Dao 2023) in XLA: the T x T scores are never held whole.
# The work is a static list of (query block, key block) pairs, those a causal mask leaves
# anything of, and one `lax.scan` over it runs the forward, another the backward: every loop
# has a static trip count, so JAX differentiates both (the "autodiff" mode, grad of grad).
# Blocks are read from the arrays as given: q viewed as [B, Tq, Hk, G, D] (query head h
# reads kv head h // G, as in `jax.nn.dot_product_attention`), k and v [B, Tk, Hk, D]; a
# block of scores is [B, Hk, G, bq, bk] and the row statistics [B, Hk, G, Tq]. Without
# groups (G = 1) the G axis is left out: the "..." of the products below. (XLA lays out the
# degenerate axis with a transpose per product: 1.3x the time at T = 128.)
_SCORES = "bqh...d,bkhd->bh...qk"  # q_i k_j^T, and g_i v_j^T
_MIX = "bh...qk,bkhd->bqh...d"  # p v_j, and dS k_j
_TO_KEYS = "bh...qk,bqh...d->bkhd"  # dS^T q_i and p^T g_i, summed over the group


class _Blocks(NamedTuple):
    """The static plan of one attention call: block sizes and true lengths, from its shapes."""

    causal: bool
    scale: float
    bq: int  # query rows per block
    bk: int  # keys per block
    tq: int  # the true lengths, before padding to whole blocks
    tk: int

    @property
    def nq(self) -> int:
        return -(-self.tq // self.bq)

    @property
    def nk(self) -> int:
        return -(-self.tk // self.bk)


_DEFAULT_BLOCK = 128  # rows and keys per block: 128 x 128 float32 scores are 64 KiB a head
_MASKED = -1e30  # a masked score: exp(_MASKED - m) is exactly 0, and no inf - inf arises


def _even_block(length: int, block: int) -> int:
    """The smallest block that cuts length into as few pieces as blocks of `block` would."""
    return -(-length // -(-length // block))


def _check_attention(query, key, value, block_size) -> None:
    q, k, v = (jnp.shape(x) for x in (query, key, value))
    if len(q) not in (3, 4) or len(k) != len(q) or k != v:
        raise ValueError(
            f"dot_product_attention: query {q}, key {k} and value {v} must be [batch, time, "
            "heads, head_dim] (or [time, heads, head_dim]), key and value alike."
        )
    if q[:-3] != k[:-3] or q[-1] != k[-1] or q[-2] % k[-2]:
        raise ValueError(
            f"dot_product_attention: query {q} does not fit key {k}: batch and head_dim must "
            "match, and key's heads must divide query's (grouped-query attention)."
        )
    dtypes = {jnp.result_type(x) for x in (query, key, value)}
    if len(dtypes) != 1 or not jnp.issubdtype(dtypes.pop(), jnp.floating):
        raise TypeError(
            "dot_product_attention: query, key and value must share one floating dtype, got "
            f"{[str(jnp.result_type(x)) for x in (query, key, value)]}."
        )
    if block_size is not None and not (
        isinstance(block_size, (int, np.integer)) and block_size > 0
    ):
        raise ValueError(
            f"dot_product_attention: block_size={block_size!r} must be a positive int."
        )


def _plan(query, key, is_causal, scale, block_size) -> _Blocks:
    tq, tk, head_dim = jnp.shape(query)[-3], jnp.shape(key)[-3], jnp.shape(query)[-1]
    block = _DEFAULT_BLOCK if block_size is None else int(block_size)
    scale = 1 / np.sqrt(head_dim) if scale is None else float(scale)
    return _Blocks(bool(is_causal), scale, _even_block(tq, block), _even_block(tk, block), tq, tk)


def _pairs(plan: _Blocks) -> np.ndarray:
    """[n, 2] block indices (i, j) with anything unmasked, key block 0 first for each i.

    Causal, query row r sees keys c <= r (top-left aligned, as jax's tril mask): block
    (i, j) holds an unmasked entry iff its first key j bk is at most its last row.
    """
    i, j = np.meshgrid(np.arange(plan.nq), np.arange(plan.nk), indexing="ij")
    keep = (j * plan.bk <= (i + 1) * plan.bq - 1) | (not plan.causal)
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int32)


def _padded(x, length: int, axis: int = 1):
    """x padded with zeros to `length` along axis (a copy only where it does not fit)."""
    axis, extra = axis % x.ndim, length - x.shape[axis]
    return jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)]) if extra else x


def _block(x, i, size: int, axis: int = 1):
    return jax.lax.dynamic_slice_in_dim(x, i * size, size, axis)


def _add_block(x, update, i, size: int, axis: int = 1):
    return jax.lax.dynamic_update_slice_in_dim(x, _block(x, i, size, axis) + update, i * size, axis)


def _rows_last(x):
    """A per-row statistic [B, Hk, (G,) bq] broadcast onto rows [B, bq, Hk, (G,) 1]."""
    return jnp.moveaxis(x, -1, 1)[..., None]


def _scores(plan: _Blocks, q_i, k_j, i, j):
    """scale q_i k_j^T, [B, Hk, (G,) bq, bk], with masked entries _MASKED."""
    s = plan.scale * jnp.einsum(_SCORES, q_i, k_j)
    if not plan.causal and plan.tk % plan.bk == 0:
        return s
    rows = i * plan.bq + jnp.arange(plan.bq)[:, None]
    cols = j * plan.bk + jnp.arange(plan.bk)[None, :]
    visible = (cols < plan.tk) & ((cols <= rows) | (not plan.causal))
    return jnp.where(visible, s, jnp.asarray(_MASKED, s.dtype))


def _loop(step, carry, xs: tuple[np.ndarray, ...]):
    """carry after step(carry, x) for every x in xs (numpy columns, one entry per step): one
    static scan, or a plain call for one step."""
    if len(xs[0]) == 1:
        return step(carry, tuple(jnp.asarray(x[0]) for x in xs))[0]
    return jax.lax.scan(step, carry, tuple(jnp.asarray(x) for x in xs))[0]


def _compute_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)  # bfloat16 blocks are read into float32


def _forward(plan: _Blocks, q, k, v):
    """(out [B, Tq', Hk, (G,) D], lse [B, Hk, (G,) Tq']) of padded q [B, Tq', Hk, (G,) D],
    k and v [B, Tk', Hk, D], in the compute dtype."""
    dt = _compute_dtype(q.dtype)

    def step(carry, ijl):
        # The online softmax: with m the running max of a row, z its sum of exp(s - m) and
        # acc its sum of exp(s - m) v, a block of scores s' moves m to m' = max(m, max s')
        # and rescales z and acc by exp(m - m') before adding its own terms. Key block 0
        # comes first and holds key 0, which every row sees: m is finite from then on.
        # acc / z and lse = m + log z do not depend on m: its gradient is stopped. A row's
        # last block writes acc / z in place: the loop's result is the output itself.
        m, z, acc = carry
        i, j, last = ijl
        k_j, v_j = (_block(x, j, plan.bk).astype(dt) for x in (k, v))
        s = _scores(plan, _block(q, i, plan.bq).astype(dt), k_j, i, j)
        m_i = _block(m, i, plan.bq, -1)
        m_new = jax.lax.stop_gradient(jnp.maximum(m_i, jnp.max(s, axis=-1)))
        p, rescale = jnp.exp(s - m_new[..., None]), jnp.exp(m_i - m_new)
        z_i = rescale * _block(z, i, plan.bq, -1) + jnp.sum(p, axis=-1)
        acc_i = _rows_last(rescale) * _block(acc, i, plan.bq)
        acc_i = acc_i + jnp.einsum(_MIX, p, v_j)
        acc_i = jnp.where(last, acc_i / _rows_last(z_i), acc_i)
        at = i * plan.bq
        m = jax.lax.dynamic_update_slice_in_dim(m, m_new, at, m.ndim - 1)
        z = jax.lax.dynamic_update_slice_in_dim(z, z_i, at, z.ndim - 1)
        return (m, z, jax.lax.dynamic_update_slice_in_dim(acc, acc_i, at, 1)), None

    pairs = _pairs(plan)
    if len(pairs) == 1:
        return _one_block(plan, q.astype(dt), k.astype(dt), v.astype(dt))
    rows = (q.shape[0], *q.shape[2:-1], q.shape[1])  # [B, Hk, (G,) Tq']
    start = (jnp.full(rows, _MASKED, dt), jnp.zeros(rows, dt), jnp.zeros(q.shape, dt))
    last = np.append(pairs[1:, 0] != pairs[:-1, 0], True)  # pairs run row block by row block
    m, z, out = _loop(step, start, (pairs[:, 0], pairs[:, 1], last))
    return out, m + jnp.log(z)


def _one_block(plan: _Blocks, q, k, v):
    """`_forward` when everything is one block: the softmax at once, no running rescale."""
    s = _scores(plan, q, k, 0, 0)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1))
    p = jnp.exp(s - m[..., None])
    z = jnp.sum(p, axis=-1)
    return jnp.einsum(_MIX, p, v) / _rows_last(z), m + jnp.log(z)


def _zeros_after(x, shape, dtype):
    """Zeros that XLA cannot make before x exists: 0 = min(number of x > 0, 0), which it does
    not fold. Plain zeros it would make, with every constant, at the program's start, and
    hold through the whole forward pass. (One block needs no loop: plain zeros fold away.)"""
    return jnp.broadcast_to(jnp.minimum(jnp.sum(x > 0), 0).astype(dtype), shape)


def _score_cotangent(p, dp, delta, scale: float):
    """scale dS: the cotangent of the scores through the softmax, times d(scale q k^T)."""
    return scale * p * (dp - delta)  # dS_rc = P_rc (dP_rc - delta_r), derived below


def _backward(plan: _Blocks, q, k, v, out, lse, g):
    """(dq, dk, dv) in the compute dtype, from the forward's out and lse, out's cotangent g;
    every array padded and laid out as in `_forward`."""
    # out_r = sum_c P_rc v_c with P_rc = exp(S_rc - lse_r), the softmax over c of the scores
    # S_rc = scale q_r . k_c. With dP_rc = g_r . v_c (the cotangent of P):
    #   dv_c = sum_r P_rc g_r
    #   dS_rc = P_rc (dP_rc - sum_c' P_rc' dP_rc') = P_rc (dP_rc - delta_r),
    #     delta_r = sum_c' P_rc' g_r . v_c' = g_r . out_r     (the softmax's Jacobian)
    #   dq_r = scale sum_c dS_rc k_c,   dk_c = scale sum_r dS_rc q_r.
    # Each block recomputes its P from q, k and lse; masked entries have P = 0, so give nothing.
    dt = _compute_dtype(q.dtype)
    delta = jnp.moveaxis(jnp.sum(g.astype(dt) * out.astype(dt), axis=-1), 1, -1)

    def step(carry, ij):
        dq, dk, dv = carry
        i, j = ij
        q_i, g_i = (_block(x, i, plan.bq).astype(dt) for x in (q, g))
        k_j, v_j = (_block(x, j, plan.bk).astype(dt) for x in (k, v))
        p = jnp.exp(_scores(plan, q_i, k_j, i, j) - _block(lse, i, plan.bq, -1)[..., None])
        dp = jnp.einsum(_SCORES, g_i, v_j)
        ds = _score_cotangent(p, dp, _block(delta, i, plan.bq, -1)[..., None], plan.scale)
        dq = _add_block(dq, jnp.einsum(_MIX, ds, k_j), i, plan.bq)
        dk = _add_block(dk, jnp.einsum(_TO_KEYS, ds, q_i), j, plan.bk)
        dv = _add_block(dv, jnp.einsum(_TO_KEYS, p, g_i), j, plan.bk)
        return (dq, dk, dv), None

    pairs = _pairs(plan)
    zeros = _zeros_after if len(pairs) > 1 else lambda x, shape, dtype: jnp.zeros(shape, dtype)
    start = tuple(zeros(delta, x.shape, dt) for x in (q, k, v))
    return _loop(step, start, (pairs[:, 0], pairs[:, 1]))


def _as_grouped(x, kv_heads: int):
    """[B, T, H, D] -> [B, T, kv_heads, H // kv_heads, D] (as it is without groups), free."""
    b, t, h, d = x.shape
    return x if h == kv_heads else x.reshape(b, t, kv_heads, h // kv_heads, d)


def _grouped(plan: _Blocks, query, key, value):
    """query as [B, Tq', Hk, (G,) D], key and value [B, Tk', Hk, D], padded to whole blocks."""
    q = _padded(_as_grouped(query, key.shape[2]), plan.nq * plan.bq)
    return (q, *(_padded(x, plan.nk * plan.bk) for x in (key, value)))


def _ungrouped(x, t: int, dtype):
    """[B, T', Hk, (G,) D] -> [B, t, H, D] in dtype, the padding cut off."""
    return x[:, :t].reshape(x.shape[0], t, -1, x.shape[-1]).astype(dtype)


def _with_batch(*arrays):
    return tuple(x[None] for x in arrays)


def attention_forward(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> tuple[Array, Array]:
    """(out, logsumexp): `dot_product_attention`'s value and the one residual it adds.

    Args: as `dot_product_attention`.

    Returns:
      out shaped and typed as query; logsumexp of each row's scores, [batch, heads, Tq]
      ([heads, Tq] without batch), in float32 (float64 for float64 inputs).
    """
    query, key, value = (jnp.asarray(x) for x in (query, key, value))
    _check_attention(query, key, value, block_size)
    options = dict(is_causal=is_causal, scale=scale, block_size=block_size)
    if query.ndim == 3:
        out, lse = attention_forward(*_with_batch(query, key, value), **options)
        return out[0], lse[0]
    plan = _plan(query, key, is_causal, scale, block_size)
    out, lse = _forward(plan, *_grouped(plan, query, key, value))
    b, _, h, _ = query.shape
    return _ungrouped(out, plan.tq, query.dtype), lse[..., : plan.tq].reshape(b, h, plan.tq)


def attention_backward(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    out: ArrayLike,
    lse: ArrayLike,
    g: ArrayLike,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> tuple[Array, Array, Array]:
    """Cotangents (dquery, dkey, dvalue) for out's cotangent g, blockwise, recomputing the
    probabilities from query, key and the forward's logsumexp (`attention_forward`)."""
    query, key, value, out, lse, g = (jnp.asarray(x) for x in (query, key, value, out, lse, g))
    options = dict(is_causal=is_causal, scale=scale, block_size=block_size)
    if query.ndim == 3:
        grads = attention_backward(*_with_batch(query, key, value, out, lse, g), **options)
        return tuple(x[0] for x in grads)
    plan = _plan(query, key, is_causal, scale, block_size)
    q, k, v = _grouped(plan, query, key, value)
    hk, rows = key.shape[2], plan.nq * plan.bq
    o, do = (_padded(_as_grouped(x, hk), rows) for x in (out, g))
    lse = _padded(lse.reshape(lse.shape[0], *q.shape[2:-1], plan.tq), rows, axis=-1)
    dq, dk, dv = _backward(plan, q, k, v, o, lse, do)
    dq = _ungrouped(dq, plan.tq, query.dtype)
    return dq, _ungrouped(dk, plan.tk, key.dtype), _ungrouped(dv, plan.tk, key.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(query, key, value, options):
    return attention_forward(query, key, value, **options._asdict())[0]


def _attention_fwd(query, key, value, options):
    out, lse = attention_forward(query, key, value, **options._asdict())
    return out, (query, key, value, out, lse)  # nothing T x T: lse is one number per row


def _attention_bwd(options, residual, g):
    return attention_backward(*residual, g, **options._asdict())


_attention.defvjp(_attention_fwd, _attention_bwd)


class _Options(NamedTuple):
    """The op's static keywords: hashable, its nondiff argument."""

    is_causal: bool
    scale: float | None
    block_size: int | None


def dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> Array:
    """softmax(scale q k^T) v per head, as `jax.nn.dot_product_attention`, in O(T) memory.

    A blockwise online softmax (FlashAttention): the forward keeps the output and one
    logsumexp per row, never the T x T probabilities, and the hand backward recomputes them
    block by block; with is_causal the blocks above the diagonal are skipped in both passes.

    Args:
      query: [batch, Tq, heads, head_dim], or [Tq, heads, head_dim].
      key, value: [batch, Tk, kv_heads, head_dim] (without batch alike); kv_heads divides
        heads, query head h reading kv head h // (heads // kv_heads) (grouped-query).
      is_causal: row r sees keys 0..r (top-left aligned when Tq != Tk, as jax's).
      scale: of the scores; default 1 / sqrt(head_dim).
      block_size: the largest block of query rows and of keys (default 128);
        each length is cut into equal blocks, padded where it does not divide.

    float32, float64 and bfloat16 (read per block, accumulated in float32).

    Returns:
      [batch, Tq, heads, head_dim] (or without batch), query's dtype.
    """
    query, key, value = (jnp.asarray(x) for x in (query, key, value))
    _check_attention(query, key, value, block_size)
    scale = None if scale is None else float(scale)
    return _attention(query, key, value, _Options(bool(is_causal), scale, block_size))
