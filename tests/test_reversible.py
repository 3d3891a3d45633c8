"""jaxnet.layers.reversible: the hand backward that rebuilds each block's input, against a
plain reversible network written here (float64), check_layer, dropout and planted bugs."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

import jaxnet
from jaxnet import gradcheck
from jaxnet import layers as L
from jaxnet.gradcheck import _battery

FAST_COMPILE = _battery.COMPILER_OPTIONS  # compile time dominates; the checker's options
BLOCKS, HALF = 3, 4
reversible_module = importlib.import_module("jaxnet.layers.reversible")  # not the function


def block(dropout=0.0):
    """(f, g), each dense-tanh-dense, with dropout in f."""
    f = L.serial(L.dense(6), L.tanh(), L.dropout(dropout), L.dense(HALF))
    return f, L.serial(L.dense(6), L.tanh(), L.dropout(0.0), L.dense(HALF))


def plain_reversible(params, x):
    """y1 = x1 + f(x2), y2 = x2 + g(y1) per block, f and g dense-tanh-dense, by hand."""

    def mlp(p, h):
        return jnp.tanh(h @ p[0]["w"] + p[0]["b"]) @ p[3]["w"] + p[3]["b"]

    x1, x2 = jnp.split(x, 2, axis=-1)
    for pf, pg in params:
        x1 = x1 + mlp(pf, x2)
        x2 = x2 + mlp(pg, x1)
    return jnp.concatenate([x1, x2], axis=-1)


def problem(net, seed=0):
    """(params, state, x): float64, every leaf 0.5 N(0, 1) (numpy: no compile per shape)."""
    _, params, state = jax.eval_shape(lambda: net.init(jax.random.key(0), (3, 2 * HALF)))
    rng = np.random.default_rng(seed)
    draw = lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape))  # noqa: E731
    return jax.tree_util.tree_map(draw, params), state, draw(np.zeros((3, 2 * HALF)))


def gradients(net, modes, *, train=False, plain=None):
    """{mode: (dparams, dx)} of <u, net(x)> for each mode ("plain": plain(params, x))."""
    params, state, x = problem(net)
    u = jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape)
    key = jax.random.key(3)

    def value(mode, p, x):
        if mode == "plain":
            return jnp.vdot(u, plain(p, x))
        out = jaxnet.network_fn(net, grad=mode, train=train)(p, state, x, key)[0]
        return jnp.vdot(u, out)

    run = jax.jit(lambda p, x: {m: jax.grad(functools.partial(value, m), (0, 1))(p, x)
                                for m in modes}, compiler_options=FAST_COMPILE)  # fmt: skip
    return run(params, x)


def test_every_mode_matches_a_plain_reversible_network():
    net = L.reversible(*[block() for _ in range(BLOCKS)])
    with jax.enable_x64(True):
        got = gradients(net, ("plain", "fused", "ops", "autodiff"), plain=plain_reversible)
        for mode in ("fused", "ops", "autodiff"):
            gradcheck.assert_close(got[mode], got["plain"], rtol=1e-9, atol=1e-12)


def test_dropout_rebuilds_with_the_same_masks():
    net = L.reversible(block(dropout=0.5), block(), block())
    with jax.enable_x64(True):
        got = gradients(net, ("fused", "autodiff"), train=True)
        gradcheck.assert_close(got["fused"], got["autodiff"], rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # the full battery, past the exact float64 checks above
def test_reversible_passes_check_layer():
    # Orders 1 and 2, finite differences, jit, vmap and scan. Small blocks: every transform
    # compiles its own copy of the backward (dropout is held above, against autodiff).
    def half():
        return L.serial(L.tanh(), L.dense(HALF))

    net = L.reversible((half(), half()), (half(), half()))
    with jax.enable_x64(True):
        gradcheck.check_layer(net, (2, 2 * HALF), dtype=jnp.float64, modes=("train",),
                              transforms=("jit", "vmap", "scan"))  # fmt: skip


def test_the_residual_is_the_output_alone():
    net = L.reversible(*[block() for _ in range(BLOCKS)])
    params, state, x = problem(net)
    f = jaxnet.network_fn(net, grad="fused", train=False)
    saved = [a for a, why in saved_residuals(lambda p, x: f(p, state, x)[0], params, x)
             if "argument" not in why]  # fmt: skip
    assert [a.shape for a in saved] == [x.shape]


def _not_rebuilt(original):  # f and g taken at the block's output: its input never rebuilt
    def wrong(block, params, state, y, g, **kwargs):
        _, dx, grads = original(block, params, state, y, g, **kwargs)
        return y, dx, grads

    return wrong


def _fresh_masks(original):  # the rebuild draws its dropout masks from other keys
    def wrong(block, params, state, y, g, *, train, keys):
        return original(block, params, state, y, g, train=train, keys=keys[::-1])

    return wrong


@pytest.mark.parametrize("wrong, dropout", [(_not_rebuilt, 0.0), (_fresh_masks, 0.5)])
def test_planted_wrong_backward_is_caught(monkeypatch, wrong, dropout):
    monkeypatch.setattr(reversible_module, "_block_backward",
                        wrong(reversible_module._block_backward))  # fmt: skip
    net = L.reversible(block(dropout), block(), block())
    with jax.enable_x64(True):
        got = gradients(net, ("fused", "autodiff"), train=True)
        with pytest.raises(gradcheck.GradcheckError):
            gradcheck.assert_close(got["fused"], got["autodiff"], rtol=1e-9, atol=1e-12)


def test_running_state_and_bad_blocks_are_refused():
    net = L.reversible((L.serial(L.dense(HALF), L.batch_norm()), L.dense(HALF)))
    _, params, state = jax.eval_shape(lambda: net.init(jax.random.key(0), (4, 2 * HALF)))
    x = jax.ShapeDtypeStruct((4, 2 * HALF), jnp.float32)
    with pytest.raises(L.LayerError, match="running state"):
        jax.eval_shape(lambda p, s, x: net.forward(p, s, x, train=True), params, state, x)
    # eval mode reads the running statistics: allowed
    jax.eval_shape(lambda p, s, x: net.forward(p, s, x, train=False), params, state, x)
    with pytest.raises(TypeError, match=r"\(f, g\) pairs"):
        L.reversible(L.dense(3))
    with pytest.raises(L.LayerError, match="keep the half's shape"):
        L.reversible((L.dense(3), L.dense(4))).init(jax.random.key(0), (2, 8))
