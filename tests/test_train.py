"""Training loops: optax by name, the hand SGD, the jitted scan."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, make_problem

import jaxnet
from jaxnet.training import checkpoint, loop


def test_make_optimizer_by_name():
    assert isinstance(loop.make_optimizer("adamw", 1e-3), optax.GradientTransformation)
    with pytest.raises(ValueError, match=r"'adma' is not an optax optimizer.*'adam'"):
        loop.make_optimizer("adma", 1e-3)
    with pytest.raises(ValueError, match="not an optax optimizer"):
        loop.make_optimizer("apply_updates", 1e-3)
    with pytest.raises(ValueError, match="not an optax optimizer"):
        loop.make_optimizer("os.system", 1e-3)


@pytest.mark.parametrize(
    "name", ["lbfgs", "polyak_sgd", "scale_by_adam", "add_decayed_weights", "clip", "ema", None]
)
def test_optax_transformations_that_are_no_optimizers_are_refused(name):
    with pytest.raises(ValueError, match=r"is not an optax optimizer.* Choose one of \['ada"):
        loop.make_training_optimizer(name, 1e-3, "cosine", 10)


def test_the_did_you_mean_hint_names_only_allowed_optimizers():
    with pytest.raises(ValueError) as info:
        loop.make_optimizer("lbgfs", 1e-3)
    assert "did you mean" not in str(info.value) and "lbfgs" not in str(info.value)
    with pytest.raises(ValueError, match="did you mean") as info:
        loop.make_optimizer("adamm", 1e-3)
    hints = re.findall(r"'(\w+)'", str(info.value).split("did you mean")[1].split("?")[0])
    assert "adam" in hints and set(hints) <= set(loop.OPTIMIZERS)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_every_allowed_optimizer_steps_downhill_on_a_schedule(weight_decay):
    params = {"w": jnp.full((3, 2), 2.0), "b": jnp.full(2, -1.0)}
    assert {"adam", "adamw", "sgd", "lion"} <= set(loop.OPTIMIZERS)
    opts = {name: loop.make_training_optimizer(name, 0.1, "cosine", 10, weight_decay=weight_decay)
            for name in loop.OPTIMIZERS}  # fmt: skip

    @jax.jit  # one program for every optimizer: eagerly, each of their ops compiled alone
    def moved(params):
        grads = params  # of sum(p^2) / 2: downhill is toward zero
        updates = {name: opt.update(grads, opt.init(params), params)[0]
                   for name, opt in opts.items()}  # fmt: skip
        return {name: jax.tree_util.tree_map(lambda u, p: jnp.sum(u * p), u, params)
                for name, u in updates.items()}  # fmt: skip

    for name, dots in moved(params).items():
        assert all(float(v) < 0 for v in jax.tree_util.tree_leaves(dots)), name


def test_hand_sgd_equals_optax_sgd():
    params, x, y = make_problem([4, 6, 3], 5, "mse", "float32")
    loss_and_grad = functools.partial(jaxnet.forward_and_backward, loss="mse")
    hand = loop.fit_full_batch(loss_and_grad, params, (x, y), loop.hand_sgd(0.1), 20)
    lib = loop.fit_full_batch(loss_and_grad, params, (x, y), optax.sgd(0.1), 20)
    jax.tree_util.tree_map(np.testing.assert_array_equal, hand, lib)


def test_fit_full_batch_lowers_the_loss_and_matches_a_python_loop():
    params, x, y = make_problem([4, 6, 3], 5, "mse", "float32")
    loss_and_grad = jax.value_and_grad(jaxnet.mlp_loss)
    final, losses = loop.fit_full_batch(loss_and_grad, params, (x, y), optax.sgd(0.05), 30)
    assert losses.shape == (30,) and losses[-1] < losses[0]
    p = params
    for _ in range(30):
        _, g = loss_and_grad(p, x, y)
        p = jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, g)
    assert_trees_close(final, p, rtol=1e-5, atol=1e-6)
    assert jnp.isfinite(losses).all()


# ------------------------------------------------------------ minibatch epochs


def _epoch_problem(n=50, batch_size=16, optimizer=None):
    params, x, _ = make_problem([5, 8, 3], n, "cross_entropy", "float32")
    y = jax.random.randint(jax.random.key(4), (n,), 0, 3)
    optimizer = optimizer or loop.make_training_optimizer("adamw", 1e-2, "cosine", 40, 1e-3)
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy")
    epoch = loop.make_train_epoch(loss, optimizer, batch_size)
    return epoch, loop.init_state(params, optimizer, jax.random.key(5)), x, y


def test_epoch_indices_cover_every_example_with_equal_batches():
    idx = loop.epoch_indices(jax.random.key(0), 50, 16)
    assert idx.shape == (4, 16)
    assert set(np.asarray(idx).ravel().tolist()) == set(range(50))
    with pytest.raises(ValueError, match="batch_size=60 must lie in"):
        loop.epoch_indices(jax.random.key(0), 50, 60)


def test_epochs_compile_once_and_lower_the_loss():
    epoch, state, x, y = _epoch_problem()  # 50 examples: the last batch is partial
    first = None
    for _ in range(4):
        state, losses = epoch(state, x, y)
        first = losses.mean() if first is None else first
    assert epoch.jitted._cache_size() == 1  # no recompilation after the first epoch
    assert losses.mean() < first and int(state.step) == 16


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    epoch, state, x, y = _epoch_problem()
    straight = state
    for _ in range(4):
        straight, _ = epoch(straight, x, y)
    for _ in range(2):
        state, _ = epoch(state, x, y)
    checkpoint.save(tmp_path / "ckpt.npz", state, {"epoch": 2})
    template = _epoch_problem()[1]
    resumed, meta = checkpoint.restore(tmp_path / "ckpt.npz", template)
    assert meta == {"epoch": 2}
    for _ in range(2):
        resumed, _ = epoch(resumed, x, y)
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed, straight)


def test_checkpoint_refuses_other_runs_and_junk(tmp_path):
    _, state, _, _ = _epoch_problem()
    checkpoint.save(tmp_path / "a.npz", state, {})
    _, other, _, _ = _epoch_problem(optimizer=optax.sgd(0.1))
    with pytest.raises(checkpoint.CheckpointError, match="do not match this run"):
        checkpoint.restore(tmp_path / "a.npz", other)
    (tmp_path / "b.npz").write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable jaxnet checkpoint"):
        checkpoint.restore(tmp_path / "b.npz", state)


def test_evaluate_ignores_padding_rows():
    params, x, _ = make_problem([5, 8, 3], 7, "cross_entropy", "float32")
    y = jnp.array([0, 1, 2, 0, 1, 2, 0])
    evaluate = loop.make_evaluate(jaxnet.mlp_network([5, 8, 3]), "cross_entropy")
    loss, acc = evaluate(params, {}, *loop.pad_rows(x, y, 1))
    padded = loop.pad_rows(np.asarray(x), np.asarray(y), 4)
    assert len(padded[0]) == 8 and padded[2].sum() == 7
    loss8, acc8 = evaluate(params, {}, *padded)
    np.testing.assert_allclose([loss8, acc8], [loss, acc], rtol=1e-6)
    want = optax.softmax_cross_entropy_with_integer_labels(jaxnet.mlp(params, x), y).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-5)


@pytest.mark.parametrize("schedule", loop.SCHEDULES)
def test_schedules_peak_at_the_learning_rate(schedule):
    lr = loop.make_schedule(schedule, 0.1, 100)
    assert max(float(lr(t)) for t in range(100)) == pytest.approx(0.1, rel=1e-6)
    if schedule != "constant":
        assert float(lr(100)) == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_is_decoupled_or_l2():
    params = {"w": jnp.ones(3)}
    zero = {"w": jnp.zeros(3)}
    for name in ("adamw", "sgd"):
        opt = loop.make_training_optimizer(name, 0.1, "constant", 10, weight_decay=0.5)
        updates, _ = opt.update(zero, opt.init(params), params)
        assert (updates["w"] < 0).all(), name  # decay pulls weights toward zero


def test_augment_runs_inside_the_epoch():
    params, x, _ = make_problem([5, 8, 3], 32, "cross_entropy", "float32")
    y = jnp.zeros(32, jnp.int32)
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy")
    blank = loop.make_train_epoch(loss, optax.sgd(0.1), 8, augment=lambda key, xb: 0 * xb)
    state, _ = blank(loop.init_state(params, optax.sgd(0.1), jax.random.key(0)), x, y)
    np.testing.assert_array_equal(state.params[0]["w"], params[0]["w"])  # dL/dw0 = x^T g = 0


def test_random_flip_mirrors_about_half():
    from jaxnet.training import data

    x = jnp.arange(400 * 784, dtype=jnp.float32).reshape(400, 784)
    flipped = data.random_flip(jax.random.key(0), x)
    mirrored = (flipped.reshape(400, 28, 28) == x.reshape(400, 28, 28)[:, :, ::-1]).all((1, 2))
    unchanged = (flipped == x).all(1)
    assert (mirrored ^ unchanged).all() and 150 < int(mirrored.sum()) < 250


def test_a_diverging_epoch_stops_updating_at_the_first_nonfinite_step():
    sgd = loop.make_training_optimizer("sgd", 1e6, "constant", 40)
    epoch, before, x, y = _epoch_problem(n=64, batch_size=8, optimizer=sgd)
    after, losses = epoch(before, x, y)
    bad = loop.first_nonfinite(before, after, losses)
    assert bad is not None and 0 < bad < len(losses)
    assert np.isfinite(losses[:bad]).all() and int(after.step) == bad
    leaves = jax.tree_util.tree_leaves((after.params, after.opt_state))
    assert all(np.isfinite(leaf).all() for leaf in leaves)  # the last finite state, kept
    gentle = loop.make_training_optimizer("sgd", 1e-3, "constant", 40)
    fine, fine_losses = _epoch_problem(n=64, batch_size=8, optimizer=gentle)[0](before, x, y)
    assert loop.first_nonfinite(before, fine, fine_losses) is None  # the check can say "fine"


def test_clip_grad_norm_bounds_the_update():
    params = {"w": jnp.zeros(4)}
    grads = {"w": jnp.full(4, 100.0)}  # global norm 200
    for clip, want in ((0.0, 200.0), (1.0, 1.0)):
        opt = loop.make_training_optimizer("sgd", 1.0, "constant", 10, clip_grad_norm=clip)
        updates, _ = opt.update(grads, opt.init(params), params)
        assert float(optax.tree.norm(updates)) == pytest.approx(want, rel=1e-6)
