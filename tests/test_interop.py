"""jaxnet.interop: a jaxnet network trained inside flax.nnx and equinox, as users write them.

Each adapter's 50 adamw steps on the digits must land where the same steps done with
`jaxnet.network_loss` land, running statistics included; inside a hybrid (a framework layer,
the jaxnet block, a framework layer) its gradients must be jax.grad's of the plain forward.
"""

import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import gradcheck, interop, layers

NET = layers.serial(
    layers.dense(32, bias=False), layers.batch_norm(), layers.relu(), layers.dense(10)
)
STEPS, BATCH = 50, 32
TOL = dict(rtol=1e-5, atol=1e-5)  # float32; atol scales with each leaf's largest entry


def _optimizer():
    return optax.adamw(1e-2, weight_decay=1e-2)


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.fixture(scope="module")
def digits():
    """50 distinct batches of the digits, jittered and standardised: xs [50, 32, 64], ys [50, 32].

    The jitter keeps every pixel varying within each batch: a pixel constant over a batch (a
    border) gets a gradient that batch_norm makes 0 in exact arithmetic and rounding noise in
    float32, which Adam divides by its own size; two correct runs would part by a tenth of
    the learning rate from the first step.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16 + 0.1 * np.random.default_rng(1).normal(size=x.shape)
    x = (x - x.mean(0)) / x.std(0)
    order = np.random.default_rng(0).permutation(len(x))[: STEPS * BATCH]
    xs = jnp.asarray(x[order].reshape(STEPS, BATCH, -1), jnp.float32)
    return xs, jnp.asarray(y[order].reshape(STEPS, BATCH))


@jax.jit
def _train_with_network_loss(params, state, xs, ys):
    """The reference: the same steps with jaxnet.network_loss and optax, no framework.

    Returns (params, state) after the steps, and the loss of each step.
    """
    tx = _optimizer()

    def step(carry, batch):
        params, state, opt_state = carry
        grad_fn = jax.value_and_grad(jaxnet.network_loss, argnums=1, has_aux=True)
        (loss, state), grads = grad_fn(NET, params, state, *batch, loss="cross_entropy")
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), loss

    (params, state, _), losses = jax.lax.scan(step, (params, state, tx.init(params)), (xs, ys))
    return (params, state), losses


def _assert_trained_as_reference(start, end, digits):
    want, losses = _train_with_network_loss(*start, *digits)
    gradcheck.assert_close(end, want, **TOL)
    assert jnp.mean(losses[-5:]) < 0.5 * jnp.mean(losses[:5])  # the steps do train


# ------------------------------------------------------------------------------ flax.nnx


def _nnx_train(nnx, model, digits):
    optimizer = nnx.Optimizer(model, _optimizer(), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: _xent(m(x, train=True), y))(model)
        optimizer.update(model, grads)
        return loss

    for x, y in zip(*digits):
        step(model, optimizer, x, y)
    return optimizer


def test_nnx_trains_as_network_loss_does(digits):
    nnx = pytest.importorskip("flax.nnx")
    model = interop.nnx_module(NET, (BATCH, 64), rngs=nnx.Rngs(0))
    start = model.as_trees()
    optimizer = _nnx_train(nnx, model, digits)
    _assert_trained_as_reference(start, model.as_trees(), digits)
    moments = jax.tree.leaves(optimizer.opt_state[0].mu)
    assert len(moments) == len(jax.tree.leaves(start[0]))  # no moments for the statistics


def test_nnx_holds_one_variable_per_array_and_round_trips_split_merge():
    nnx = pytest.importorskip("flax.nnx")
    model = interop.nnx_module(NET, (BATCH, 64), rngs=nnx.Rngs(0))
    params, state = model.as_trees()
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == len(jax.tree.leaves(params)) == 5
    assert len(jax.tree.leaves(nnx.state(model, nnx.BatchStat))) == len(jax.tree.leaves(state))
    assert model.params[0]["w"].shape == (64, 32) and model.state[1]["var"].shape == (32,)
    graphdef, param_state, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    again = nnx.merge(graphdef, param_state, stats)
    chex.assert_trees_all_equal(again.as_trees(), model.as_trees())
    x = jnp.ones((BATCH, 64))
    chex.assert_trees_all_equal(again(x, train=False), model(x, train=False))


# ------------------------------------------------------------------------------- equinox


def _eqx_train(eqx, model, state, digits):
    tx = _optimizer()

    @eqx.filter_jit
    def step(model, state, opt_state, x, y):
        def loss_fn(model, state):
            out, state = model(x, state, train=True)
            return _xent(out, y), state

        (_, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, state)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, opt_state

    opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))
    for x, y in zip(*digits):
        model, state, opt_state = step(model, state, opt_state, x, y)
    return model, state, opt_state


def test_eqx_trains_as_network_loss_does(digits):
    eqx = pytest.importorskip("equinox")
    model, state = interop.eqx_module(NET, (BATCH, 64), key=jax.random.key(0))
    start = model.params, state.get(model.index)
    model, state, opt_state = _eqx_train(eqx, model, state, digits)
    _assert_trained_as_reference(start, (model.params, state.get(model.index)), digits)
    assert len(jax.tree.leaves(opt_state[0].mu)) == len(jax.tree.leaves(start[0]))


def test_eqx_trainable_leaves_are_exactly_the_params():
    eqx = pytest.importorskip("equinox")
    model, state = interop.eqx_module(NET, (BATCH, 64), key=jax.random.key(0))
    trainable, static = eqx.partition(model, eqx.is_inexact_array)
    want = jax.tree.leaves(model.params)
    assert [id(a) for a in jax.tree.leaves(trainable)] == [id(a) for a in want]
    assert jax.tree.structure(state.get(model.index)[1]) == jax.tree.structure(
        {"mean": 0, "var": 0}
    )
    before = state.get(model.index)
    out, after = eqx.combine(trainable, static)(jnp.ones((BATCH, 64)), state, train=False)
    assert out.shape == (BATCH, 10)
    chex.assert_trees_all_equal(after.get(model.index), before)  # eval mode: unmoved
    model(jnp.ones((BATCH, 64)), state, train=False)  # and still usable, as eqx.nn.BatchNorm's


# ------------------------------------------------------------------------------- hybrids

NORM_BLOCK = layers.serial(layers.dense(8), layers.batch_norm(), layers.gelu(), layers.dense(8))
HYBRID_X = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
HYBRID_Y = np.random.default_rng(3).normal(size=(6, 2)).astype(np.float32)


def _hybrid_loss(pred):
    return jnp.mean(jnp.abs(pred - HYBRID_Y) ** 1.5)  # the user's own loss


def _away_from_zero(tree):
    """Every float leaf plus noise, drawn by numpy (no compilation per shape): a zero init
    (the biases) can hide a wrong backward."""
    rng = np.random.default_rng(1)

    def noisy(a):
        return jnp.asarray(a + 0.1 * rng.standard_normal(a.shape).astype(a.dtype))

    return jax.tree.map(noisy, tree)


def _nnx_grad(net, *, plain):
    """nnx.Linear, the jaxnet block, nnx.Linear: nnx.grad of the user's loss, as nested
    dicts, through the block (plain=False) or through the layers' plain forward rules."""
    nnx = pytest.importorskip("flax.nnx")

    class Hybrid(nnx.Module):
        def __init__(self, rngs):
            self.first = nnx.Linear(5, 8, rngs=rngs)
            self.block = interop.nnx_module(net, (6, 8), rngs=rngs)
            self.last = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            h = jnp.tanh(self.first(x))
            if plain:
                h = layers.apply(self.block.net, *self.block.as_trees(), h, train=True)[0]
            else:
                h = self.block(h, train=True)
            return self.last(h)

    model = Hybrid(nnx.Rngs(0))
    nnx.update(model, _away_from_zero(nnx.state(model, nnx.Param)))
    grads = nnx.jit(nnx.grad(lambda m: _hybrid_loss(m(HYBRID_X))))(model)
    return nnx.to_pure_dict(grads)


def _eqx_grad(net, *, plain):
    """eqx.nn.Linear, the jaxnet block, eqx.nn.Linear: eqx.filter_grad of the user's loss,
    through the block (plain=False) or through the layers' plain forward rules."""
    eqx = pytest.importorskip("equinox")
    keys = jax.random.split(jax.random.key(0), 3)

    class Hybrid(eqx.Module):
        first: eqx.nn.Linear
        block: eqx.Module
        last: eqx.nn.Linear

        def __init__(self):
            self.first = eqx.nn.Linear(5, 8, key=keys[0])
            self.block = interop.eqx_layer(net, (6, 8), key=keys[1])
            self.last = eqx.nn.Linear(8, 2, key=keys[2])

        def __call__(self, x, state):
            h = jnp.tanh(jax.vmap(self.first)(x))
            if plain:
                stats = state.get(self.block.index)
                h = layers.apply(self.block.net, self.block.params, stats, h, train=True)[0]
            else:
                h, state = self.block(h, state, train=True)
            return jax.vmap(self.last)(h)

    model, state = eqx.nn.make_with_state(Hybrid)()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    model = eqx.combine(_away_from_zero(params), static)
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: _hybrid_loss(m(HYBRID_X, state))))(model)
    return grads.first, grads.block.params, grads.last  # each call makes its own Hybrid class


def _scaled_dense(features):
    dense = layers.dense(features)

    def backward(p, r, g):  # every cotangent 1% too large
        return jax.tree.map(lambda a: 1.01 * a, dense.backward(p, r, g))

    return dense._replace(backward=backward)


@pytest.mark.parametrize("grad_of", [_nnx_grad, _eqx_grad], ids=["nnx", "eqx"])
def test_hybrid_gradients_are_jax_grads_and_a_wrong_backward_is_caught(grad_of):
    want = grad_of(NORM_BLOCK, plain=True)
    gradcheck.assert_close(grad_of(NORM_BLOCK, plain=False), want)
    wrong = layers.serial(layers.dense(8), layers.batch_norm(), layers.gelu(), _scaled_dense(8))
    with pytest.raises(AssertionError):
        gradcheck.assert_close(grad_of(wrong, plain=False), want)


def test_the_key_reaches_dropout_in_both():
    nnx = pytest.importorskip("flax.nnx")
    pytest.importorskip("equinox")
    net = layers.serial(layers.dense(16), layers.dropout(0.5))
    x, key = jnp.ones((2, 4)), jax.random.key(7)
    nnx_model = interop.nnx_module(net, (2, 4), rngs=nnx.Rngs(0))
    eqx_model, state = interop.eqx_module(net, (2, 4), key=jax.random.key(0))
    for params, out in [
        (nnx_model.as_trees()[0], nnx_model(x, train=True, key=key)),
        (eqx_model.params, eqx_model(x, state, train=True, key=key)[0]),
    ]:
        want, _ = jaxnet.network_fn(net)(params, [{}, {}], x, key)
        chex.assert_trees_all_equal(out, want)
        assert 0 < int(jnp.sum(out == 0)) < out.size  # some units dropped, not all


# ------------------------------------------------------------------------- the packaging


def test_jaxnet_imports_neither_framework():
    code = (
        "import sys, jaxnet, jaxnet.interop\n"
        "assert not {'flax', 'equinox'} & set(sys.modules), 'imported a framework'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_a_missing_framework_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax.nnx", None)
    monkeypatch.setitem(sys.modules, "equinox", None)
    with pytest.raises(ImportError, match=r"pip install jaxnet-handvjp\[flax\]"):
        interop.nnx_module(NET, (BATCH, 64), rngs=None)
    with pytest.raises(ImportError, match=r"pip install jaxnet-handvjp\[equinox\]"):
        interop.eqx_module(NET, (BATCH, 64), key=jax.random.key(0))
