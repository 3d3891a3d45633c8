"""jaxnet.ops.dot_product_attention: values and hand gradients against jax.nn's attention
(float32, bfloat16) and against plain jax.numpy attention written here (float64), with
planted wrong backwards that the checks must catch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

import jaxnet
from jaxnet import gradcheck, ops
from jaxnet import layers as L
from jaxnet.gradcheck import _battery
from jaxnet.lessons import reference

# Compile time dominates these tests; the checker's options cut it fourfold (same results).
FAST_COMPILE = _battery.COMPILER_OPTIONS

# (batch or None, Tq, Tk, heads, kv_heads, head_dim, causal, block_size): blocks that do not
# divide T, T = 1, grouped-query heads, Tq != Tk both ways, one block and many.
CASES = {
    "causal_gqa": (2, 7, 7, 4, 2, 3, True, 3),
    "causal_tq_gt_tk": (1, 9, 4, 3, 3, 2, True, 3),
    "causal_tq_lt_tk_unbatched": (None, 4, 9, 2, 1, 2, True, 3),
    "full_tq_ne_tk": (2, 5, 9, 2, 2, 3, False, 4),
    "full_one_block": (1, 6, 6, 2, 1, 4, False, None),
    "causal_t1": (None, 1, 1, 1, 1, 2, True, None),
}


def plain_attention(query, key, value, *, is_causal=False, scale=None):
    """softmax(scale q k^T) v in plain jax.numpy, the whole T x T at once."""
    batched = query.ndim == 4
    if not batched:
        query, key, value = query[None], key[None], value[None]
    b, tq, h, d = query.shape
    tk, hk = key.shape[1], key.shape[2]
    scale = 1 / float(np.sqrt(d)) if scale is None else scale
    q = query.reshape(b, tq, hk, h // hk, d)
    s = scale * jnp.einsum("bqhgd,bkhd->bhgqk", q, key)
    if is_causal:
        s = jnp.where(jnp.tril(jnp.ones((tq, tk), bool)), s, -jnp.inf)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", jax.nn.softmax(s, axis=-1), value)
    out = out.reshape(b, tq, h, d)
    return out if batched else out[0]


def inputs(case, dtype, seed=0):
    batch, tq, tk, h, hk, d, _, _ = case
    lead = () if batch is None else (batch,)
    shapes = [(*lead, tq, h, d), (*lead, tk, hk, d), (*lead, tk, hk, d), (*lead, tq, h, d)]
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shapes]  # q, k, v, w


def options(case):
    return dict(is_causal=case[6], block_size=case[7])


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options=FAST_COMPILE)
def value_and_grads(attention, options, q, k, v, w):
    """(out, (dq, dk, dv)) for the cotangent w."""
    out, pullback = jax.vjp(lambda *a: attention(*a, **dict(options)), q, k, v)
    return out, pullback(w)


def ours_and_plain(name, dtype, attention=ops.dot_product_attention, reference=plain_attention):
    case = CASES[name]
    q, k, v, w = inputs(case, dtype)
    opts = tuple(options(case).items())
    ref_opts = tuple((n, x) for n, x in opts if n != "block_size")
    return value_and_grads(attention, opts, q, k, v, w), value_and_grads(
        reference, ref_opts, q, k, v, w
    )


@pytest.mark.parametrize("name", CASES)
def test_float64_against_plain_attention(name):
    with jax.enable_x64(True):
        got, want = ours_and_plain(name, jnp.float64)
        gradcheck.assert_close(got, want, rtol=1e-9, atol=1e-12)


def _jax_attention(q, k, v, *, is_causal=False):
    return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("name", ["causal_gqa", "causal_tq_lt_tk_unbatched", "full_tq_ne_tk"])
def test_float32_against_jax(name):
    got, want = ours_and_plain(name, jnp.float32, reference=_jax_attention)
    gradcheck.assert_close(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["causal_gqa", "full_one_block"])
def test_bfloat16_against_jax_and_float32(name):
    got, want = ours_and_plain(name, jnp.bfloat16, reference=_jax_attention)
    exact = ours_and_plain(name, jnp.float32)[1]  # plain attention in float32
    for g, w, e in zip(*map(jax.tree_util.tree_leaves, (got, want, exact))):
        assert g.dtype == jnp.bfloat16
        g, w, e = (np.asarray(x, np.float32) for x in (g, w, e))
        scale = max(np.abs(e).max(), 1.0)
        np.testing.assert_allclose(g, w, atol=3e-2 * scale, rtol=3e-2)
        # accumulated in float32: no further from the float32 value than jax's own bfloat16
        assert np.abs(g - e).max() <= 1.5 * np.abs(w - e).max() + 1e-2 * scale


def test_bfloat16_at_t1():
    # jax's bfloat16 attention does not compile for one key on the CPU (its 1 x 1 dot asks
    # for the BF16_BF16_F32 algorithm, which the elemental emitter lacks): float32 alone.
    got = ours_and_plain("causal_t1", jnp.bfloat16)[0]
    want = ours_and_plain("causal_t1", jnp.float32)[1]
    assert all(g.dtype == jnp.bfloat16 for g in jax.tree_util.tree_leaves(got))
    got = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), got)
    gradcheck.assert_close(got, want, rtol=1e-2, atol=1e-2)


def test_residuals_are_out_and_logsumexp_nothing_t_by_t():
    q, k, v, _ = inputs((1, 16, 16, 2, 1, 4, True, 4), jnp.float32)
    f = functools.partial(ops.dot_product_attention, is_causal=True, block_size=4)
    saved = [aval for aval, why in saved_residuals(f, q, k, v) if "argument" not in why]
    assert sorted(a.shape for a in saved) == [(1, 2, 16), (1, 16, 2, 4)]  # lse, out


def test_causal_blocks_above_the_diagonal_are_never_visited():
    q, k, _, _ = inputs((1, 10, 10, 1, 1, 2, True, 3), jnp.float32)
    plan = ops._plan(q, k, True, None, 3)  # 4 blocks (3, 3, 3, 1) of rows and of keys
    pairs = ops._pairs(plan)
    assert len(pairs) == 10 and all(j <= i for i, j in pairs)
    assert len(ops._pairs(plan._replace(causal=False))) == 16


# ---------------------------------------------------------------- planted wrong backwards


def _with_backward_patched(monkeypatch, name, wrong):
    """The op, its backward traced with ops.<name> replaced by wrong(original)."""
    original = getattr(ops, name)

    def forward(q, k, v, opts):
        out, lse = ops.attention_forward(q, k, v, **opts._asdict())
        return out, (q, k, v, out, lse)

    def backward(opts, residual, g):
        with monkeypatch.context() as m:
            m.setattr(ops, name, wrong(original))
            return ops.attention_backward(*residual, g, **opts._asdict())

    f = jax.custom_vjp(lambda q, k, v, opts: forward(q, k, v, opts)[0], nondiff_argnums=(3,))
    f.defvjp(forward, backward)
    return lambda q, k, v, is_causal, block_size: f(
        q, k, v, ops._Options(is_causal, None, block_size)
    )


def _dropped_delta(original):  # dS = P dP: the softmax Jacobian's -P delta term dropped
    return lambda p, dp, delta, scale: scale * p * dp


def _missed_block(original):  # the backward forgets the last block on the diagonal
    return lambda plan: original(plan)[:-1]


@pytest.mark.parametrize(
    "name, wrong", [("_score_cotangent", _dropped_delta), ("_pairs", _missed_block)]
)
def test_planted_wrong_backward_is_caught(monkeypatch, name, wrong):
    broken = _with_backward_patched(monkeypatch, name, wrong)
    with jax.enable_x64(True):
        got, want = ours_and_plain("causal_gqa", jnp.float64, attention=broken)
        gradcheck.assert_close(got[0], want[0], rtol=1e-9, atol=1e-12)  # the forward is right
        with pytest.raises(gradcheck.GradcheckError):
            gradcheck.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_bad_input_is_refused_clearly():
    q = jnp.ones((1, 4, 4, 2))
    with pytest.raises(ValueError, match="must divide"):
        ops.dot_product_attention(q, jnp.ones((1, 4, 3, 2)), jnp.ones((1, 4, 3, 2)))
    with pytest.raises(ValueError, match=r"\[batch, time, heads, head_dim\]"):
        ops.dot_product_attention(q, q[0], q[0])
    with pytest.raises(TypeError, match="one floating dtype"):
        ops.dot_product_attention(q, q.astype(jnp.bfloat16), q)
    with pytest.raises(ValueError, match="block_size"):
        ops.dot_product_attention(q, q, q, block_size=0)


# --------------------------------------------------------------------------------- layers

TRANSFORMS = ("jit", "vmap", "scan")  # the issue's; each adds a copy of the backward to compile


@pytest.mark.slow  # the full battery, past the exact float64 checks above
def test_attention_layer_passes_check_layer():
    # Against plain attention above: orders 1 and 2, finite differences, jit, vmap and scan;
    # 7 positions in blocks of 3, two heads. (position_embedding's backward is held to
    # jax.grad in the GPT below.)
    def reference(params, state, x, *, train, key):
        q, k, v = (a.reshape(*a.shape[:2], 2, -1) for a in jnp.split(x, 3, axis=-1))
        return plain_attention(q, k, v, is_causal=True).reshape(*x.shape[:2], -1)

    with jax.enable_x64(True):
        layer = L.attention(2, block_size=3)
        gradcheck.check_layer(layer, (2, 7, 12), dtype=jnp.float64, modes=("eval",),
                              reference=reference, transforms=TRANSFORMS)  # fmt: skip


def test_position_embedding_adds_the_first_rows_and_refuses_long_input():
    layer = L.position_embedding(8)
    _, params, _ = layer.init(jax.random.key(0), (2, 5, 3))
    out, _, _ = layer.forward(params, {}, jnp.zeros((2, 5, 3)))
    np.testing.assert_array_equal(out[1], params["table"][:5])
    with pytest.raises(L.LayerError, match=r"9 positions.*max_len=8"):
        layer.forward(params, {}, jnp.zeros((2, 9, 3)))
    with pytest.raises(L.LayerError, match="3 \\* C"):
        L.attention(2).init(jax.random.key(0), (2, 5, 8))


def tiny_gpt(vocab=11, width=8, heads=2, max_len=8, block_size=3):
    """reference.gpt_loss's network: token and position embeddings, a pre-norm attention
    block and an MLP block, layer_norm, dense(vocab)."""
    return L.serial(
        L.embedding(vocab, width),
        L.position_embedding(max_len),
        L.residual(L.layer_norm(), L.dense(3 * width), L.attention(heads, block_size=block_size),
                   L.dense(width)),
        L.residual(L.layer_norm(), L.dense(4 * width), L.gelu(), L.dense(width)),
        L.layer_norm(),
        L.dense(vocab),
    )  # fmt: skip


def numpy_params(net, input_shape, seed=0):
    """(params, state): float64 params of net's structure, each 0.5 N(0, 1) (jax.random
    would compile anew for every shape), and its state (none here)."""
    _, params, state = jax.eval_shape(lambda: net.init(jax.random.key(0), input_shape, jnp.float64))
    rng = np.random.default_rng(seed)
    draw = lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape))  # noqa: E731
    return jax.tree_util.tree_map(draw, params), state


def test_a_gpt_in_every_gradient_mode_is_nanogpt_by_hand():
    # reference.gpt_loss is nanoGPT's code in jax.numpy: its heads, dense on [B, T, C].
    net = tiny_gpt()
    with jax.enable_x64(True):
        ids = jnp.asarray(np.random.default_rng(1).integers(0, 11, (2, 7)))
        labels = jnp.roll(ids, -1, axis=1)
        params, state = numpy_params(net, ids.shape)

        def loss(mode, params):
            if mode == "plain":
                return reference.gpt_loss(params, state, ids, labels, heads=2)[0]
            return jaxnet.network_loss(net, params, state, ids, labels,
                                       loss="cross_entropy", grad=mode)[0]  # fmt: skip

        modes = ("plain", "fused", "ops", "autodiff")
        run = jax.jit(lambda p: {m: jax.grad(functools.partial(loss, m))(p) for m in modes},
                      compiler_options=FAST_COMPILE)  # fmt: skip
        got = run(params)
        for mode in modes[1:]:
            gradcheck.assert_close(got[mode], got["plain"], rtol=1e-9, atol=1e-12)
