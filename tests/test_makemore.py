"""The makemore MLP on jaxnet.layers: its fused VJP is the lecture's, its evaluation and
batch_norm calibration are exact, it trains; and experiments/makemore.py runs small."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close

from jaxnet import gradcheck, layers
from jaxnet.lessons import makemore, names, ninja
from jaxnet.training import loop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def problem():
    """First names' validation windows, a small model and the lecture's params for it (the
    sizes of test_ninja's, whose jitted programs this file then reuses)."""
    pairs = names.windows(names.split(names.load("first"))[1], block_size=3)
    model = makemore.model(vocab=27, embedding_dim=5, hidden=16)
    lecture = ninja.init_params(
        jax.random.key(0), vocab=27, block_size=3, embedding_dim=5, hidden=16
    )
    return pairs, model, lecture


def _state(model, batch):
    return layers.init(model.net, jax.random.key(0), (batch, 3))[2]


def test_the_layers_fused_vjp_is_the_lectures_chain(problem):
    pairs, model, lecture = problem
    x, y = jnp.asarray(pairs.x[:32]), jnp.asarray(pairs.y[:32])
    params = makemore.from_lecture(lecture)
    state = _state(model, 32)
    (value, new_state), got = jax.jit(
        jax.value_and_grad(lambda p: makemore.loss(model.net, p, state, x, y), has_aux=True)
    )(params)
    loss, v = ninja.forward(lecture, x, y)
    want = makemore.from_lecture(ninja.backward(lecture, v, x, y))
    assert value == pytest.approx(float(loss), rel=1e-6)
    gradcheck.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # batch_norm's running mean moved by momentum 0.1 toward this batch's mean
    assert_trees_close(new_state[3]["mean"], 0.1 * v["bnmeani"][0], rtol=1e-5, atol=1e-7)


def test_calibrate_sets_the_training_split_statistics(problem):
    pairs, model, lecture = problem
    params = makemore.from_lecture(lecture)
    state = makemore.calibrate(model, params, _state(model, 8), pairs.x, block=100)
    c, w1 = np.asarray(lecture["C"]), np.asarray(lecture["W1"])
    hprebn = c[pairs.x].reshape(len(pairs.x), -1) @ w1
    assert_trees_close(state[3]["mean"], hprebn.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state[3]["var"], hprebn.var(0, ddof=1), rtol=1e-4)
    assert state[3]["mean"].dtype == jnp.float32


def test_nll_in_blocks_is_the_mean_over_every_row(problem):
    pairs, model, lecture = problem
    params = makemore.from_lecture(lecture)
    state = makemore.calibrate(model, params, _state(model, 8), pairs.x)
    x, y = pairs.x[:1001], pairs.y[:1001]
    values, _ = loop.example_losses(model.net, params, state, jnp.asarray(x), jnp.asarray(y),
                                     "cross_entropy")  # fmt: skip
    want = float(np.mean(values))
    assert makemore.nll(model.net, params, state, x, y, block=128) == pytest.approx(want, rel=1e-5)
    assert makemore.nll(model.net, params, state, x, y) == pytest.approx(want, rel=1e-5)
    assert makemore.nll(model.net, params, state, x[:-1], y[:-1]) != pytest.approx(want, rel=1e-7)


def test_a_train_chunk_lowers_the_loss(problem):
    pairs, model, _ = problem
    _, params, state = layers.init(model.net, jax.random.key(1), (32, 3))
    optimizer = optax.adam(1e-2)
    chunk = makemore.make_train_chunk(model.net, optimizer, batch_size=32, length=300)
    x, y = jnp.asarray(pairs.x), jnp.asarray(pairs.y)
    params, state, _, losses = chunk(params, state, optimizer.init(params), jax.random.key(2), x, y)
    assert losses.shape == (300,)
    assert abs(float(losses[0]) - math.log(27)) < 0.1  # small output layer: near uniform at first
    assert float(losses[-50:].mean()) < float(losses[:50].mean()) - 0.5
    state = makemore.calibrate(model, params, state, pairs.x)
    assert makemore.nll(model.net, params, state, pairs.x, pairs.y) < math.log(27) - 0.5
    sampled = names.sample(jax.random.key(3), makemore.logits_fn(model.net, params, state),
                           count=3, block_size=3)  # fmt: skip
    assert len(sampled) == 3 and all(re.fullmatch("[a-z]*", s) for s in sampled)


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "experiments.makemore", f"--output_dir={tmp_path}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_script_runs_small(tmp_path):
    done = _run(tmp_path, "--names=first", "--steps=200", "--chunk_steps=100",
                "--print_every=0", "--embedding_dim=4", "--hidden=24", "--batch_size=32",
                "--learning_rate=0.01", "--samples=5")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "bigram_test_loss", "seconds"):
        assert math.isfinite(results[key]), key
    assert results["part1_ok"]
    assert [r["name"] for r in results["part1"]["steps"]] == list(ninja.ORDER)
    assert results["test_loss"] < math.log(27) and results["bigram_test_loss"] < math.log(27)
    assert len(results["samples"]) == 5
    assert all(re.fullmatch("[a-z]*", s) for s in results["samples"])
    assert len(re.findall(r"step +\d+/200 +loss [\d.]+ +\d+ steps/s", done.stdout)) == 2
    assert "bnvar_inv" in done.stdout and (tmp_path / "loss.png").stat().st_size > 0


@pytest.mark.parametrize("flag", ["--names=middle", "--batch_size=1", "--optimizer=adamm"])
def test_bad_flags_fail_with_a_message(tmp_path, flag):
    done = _run(tmp_path, flag)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "FATAL Flags parsing error" in done.stderr
