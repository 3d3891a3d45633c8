"""The main job, in-process: train_and_evaluate on the digits (tiny, offline).

The tests that train several runs (resume, interrupts, divergence, options) are `slow`;
the fast subset keeps one short run (the log's test) and the configuration checks."""

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from jaxnet import checkpoint, trainer

SMALL = dict(epochs=4, hidden=(32,), batch_size=100)  # 1438 examples: a partial last batch


def run(workdir: Path, **overrides) -> tuple[dict | None, list[str]]:
    """(summary, the lines logged) of a digits run with SMALL, then overrides."""
    lines: list[str] = []
    config = trainer.Config.for_dataset("digits", **{**SMALL, **overrides})
    return trainer.train_and_evaluate(config, workdir, log=lines.append), lines


def metrics(workdir: Path) -> list[dict]:
    """metrics.jsonl without its timings."""
    return [{k: v for k, v in r.items() if k != "samples_per_second"}
            for r in trainer.read_metrics(workdir)]  # fmt: skip


def assert_same_checkpoint(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        leaves = [k for k in x.files if k.startswith("leaf_")]
        assert leaves and leaves == [k for k in y.files if k.startswith("leaf_")]
        for key in leaves:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A SMALL run that nothing interrupts."""
    workdir = tmp_path_factory.mktemp("straight")
    run(workdir)
    return workdir


@pytest.mark.slow  # trains
def test_a_run_writes_summary_metrics_and_two_checkpoints(straight):
    s = json.loads((straight / "summary.json").read_text())
    assert s["dataset"] == "digits" and s["epochs"] == 4 and s["devices"] >= 1
    assert s["test_accuracy"] > 0.6 and s["test_loss"] > 0 and s["wall_seconds"] > 0
    assert s["sizes"] == [64, 32, 10] and s["config"]["clip_grad_norm"] == 0.0
    assert "resume" not in s["config"] and s["final"]["epoch"] == 4
    assert [r["epoch"] for r in metrics(straight)] == [1, 2, 3, 4]
    files = sorted(p.name for p in straight.iterdir())
    assert files == ["checkpoint.1.npz", "checkpoint.npz", "metrics.jsonl", "summary.json"]
    epochs = [checkpoint.read_meta(straight / f)["epoch"] for f in files[:2]]
    assert epochs == [3, 4]


def test_the_log_has_the_gradcheck_then_one_line_per_epoch(tmp_path):
    summary, lines = run(tmp_path, epochs=2, grad="ops", loss="mse", optimizer="sgd",
                         learning_rate=1e-3, validation_fraction=0.1)  # fmt: skip
    assert lines[0].startswith("gradcheck: ops vs autodiff") and lines[0].endswith(": ok")
    assert lines[2].startswith("epoch   2/2") and "valid_acc" in lines[2]
    assert 0 <= summary["test_accuracy"] <= 1 and "valid_loss" in summary["final"]


@pytest.mark.slow  # trains
def test_label_smoothing_reaches_the_loss(tmp_path):
    smooth, _ = run(tmp_path / "smooth", epochs=10, label_smoothing=0.2)
    plain, _ = run(tmp_path / "plain", epochs=10)
    assert smooth["config"]["label_smoothing"] == 0.2
    # Smoothed targets cost at least their entropy (0.87 nats for 0.2 over 10 classes).
    assert smooth["final"]["train_loss"] > 0.86 > plain["final"]["train_loss"]


@pytest.mark.slow  # trains
def test_resume_after_a_stop_is_bitwise_the_straight_run(tmp_path, straight):
    summary, lines = run(tmp_path, stop_after_epoch=2)
    assert summary is None and lines[-1] == "stopped after epoch 2; continue with --resume"
    assert not (tmp_path / "summary.json").exists()
    with pytest.raises(ValueError, match="pass --resume"):
        run(tmp_path)
    with pytest.raises(ValueError, match=r"\{'batch_size': 100\}, not \{'batch_size': 50\}"):
        run(tmp_path, batch_size=50, resume=True)
    with pytest.raises(ValueError, match=r"\{'hidden': \[32\]\}, not \{'hidden': \[16\]\}"):
        run(tmp_path, hidden=(16,), resume=True)  # named, before the arrays fail to fit
    _, lines = run(tmp_path, resume=True)
    assert lines[0] == f"resumed from {tmp_path / 'checkpoint.npz'} after epoch 2"
    assert metrics(tmp_path) == metrics(straight)
    assert_same_checkpoint(tmp_path / "checkpoint.npz", straight / "checkpoint.npz")


@pytest.mark.slow  # trains
def test_an_unreadable_newest_checkpoint_resumes_from_the_older(tmp_path, straight):
    run(tmp_path, stop_after_epoch=3)
    newest = tmp_path / "checkpoint.npz"
    newest.write_bytes(newest.read_bytes()[:-200])  # truncated
    _, lines = run(tmp_path, resume=True)
    assert "checkpoint.npz: not a readable jaxnet checkpoint" in lines[0]
    assert lines[0].endswith("Resuming from the older checkpoint.1.npz.")
    assert lines[1].endswith("checkpoint.1.npz after epoch 2") and "epoch   3/4" in lines[3]
    assert_same_checkpoint(newest, straight / "checkpoint.npz")
    for path in checkpoint.rotated_paths(newest, 2):
        path.write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint.*afresh"):
        run(tmp_path, resume=True)


@pytest.mark.slow  # trains
@pytest.mark.parametrize(
    "poison, what",
    [("label", "loss"), ("pixel", "loss")],  # relu keeps a NaN, as jax.nn.relu: the loss sees it
)
def test_a_nonfinite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, poison, what
):
    run(tmp_path, stop_after_epoch=1)
    kept = (tmp_path / "checkpoint.npz").read_bytes()
    prepare = trainer.prepare

    def poisoned(config):  # row 1000 is not in the gradcheck's first batch
        prepared = prepare(config)
        if poison == "label":
            prepared.arrays["y_train"][1000] = 99  # out of range: NaN loss under jit
        else:
            prepared.arrays["x_train"][1000, 3] = np.nan
        return prepared

    monkeypatch.setattr(trainer, "prepare", poisoned)
    with pytest.raises(trainer.Diverged) as caught:
        run(tmp_path, resume=True)
    message = str(caught.value)
    assert message.startswith(f"the training {what} became non-finite (")
    assert "at epoch 2, step " in message and "of epoch 1, is kept" in message
    assert "--learning_rate (now 0.003)" in message and "--clip_grad_norm" in message
    assert (tmp_path / "checkpoint.npz").read_bytes() == kept
    assert all(np.isfinite(leaf).all() for leaf in caught.value.state.params[0].values())
    assert [r["epoch"] for r in trainer.read_metrics(tmp_path)] == [1]


@pytest.mark.slow  # trains
def test_sigterm_checkpoints_the_epoch_and_resume_finishes_the_run(tmp_path, straight):
    def log(line):
        if line.startswith("epoch   2/"):
            os.kill(os.getpid(), signal.SIGTERM)  # taken between epochs, after this one

    config = trainer.Config.for_dataset("digits", **SMALL)
    with pytest.raises(trainer.Interrupted, match=r"SIGTERM after epoch 2 of 4.*--resume"):
        trainer.train_and_evaluate(config, tmp_path, log=log)
    assert checkpoint.read_meta(tmp_path / "checkpoint.npz")["epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    run(tmp_path, resume=True)
    assert_same_checkpoint(tmp_path / "checkpoint.npz", straight / "checkpoint.npz")


@pytest.mark.slow  # trains
def test_clip_grad_norm_is_recorded_and_changes_the_run(tmp_path, straight):
    summary, _ = run(tmp_path, clip_grad_norm=0.05)
    meta = checkpoint.read_meta(tmp_path / "checkpoint.npz")
    assert summary["config"]["clip_grad_norm"] == meta["config"]["clip_grad_norm"] == 0.05
    assert metrics(tmp_path) != metrics(straight)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden=(12, 0)), r"--hidden=\[12, 0\] must list positive widths"),
        (dict(hidden=("12", "abc")), "--hidden=.* must list positive widths"),
        (dict(batch_size=0), r"--batch_size=0 must lie in \[1, inf\]"),
        (dict(optimizer="adma"), "did you mean"),
        (dict(epochs=-2), "--epochs=-2 must lie in"),
        (dict(clip_grad_norm=-1.0), "--clip_grad_norm=-1.0 must lie in"),
        (dict(schedule="cosin"), "--schedule='cosin' is not one of"),
        (dict(label_smoothing=1.5), r"must lie in \[0, 1\)"),
        (dict(loss="mse", label_smoothing=0.1), "'cross_entropy' only"),
        (dict(validation_fraction=0.7), r"--validation_fraction=0.7 must lie in \[0.0, 0.5\]"),
    ],
)
def test_config_refuses_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        trainer.Config.for_dataset("digits", **overrides)


def test_config_for_dataset_takes_its_defaults_and_overrides():
    config = trainer.Config.for_dataset("fashion_mnist", epochs=2)
    assert config.hidden == (512, 512) and config.epochs == 2 and config.label_smoothing == 0.1
    assert trainer.Config.for_dataset("fashion_mnist", loss="mse").label_smoothing == 0.0
    with pytest.raises(ValueError, match="--dataset='cifar' is not one of"):
        trainer.Config.for_dataset("cifar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


def test_a_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size=5000 must lie in"):
        run(tmp_path, batch_size=5000)


LAYERED = dict(norm="batch", dropout=0.2, activation="gelu")


@pytest.mark.slow  # trains
def test_batch_norm_and_dropout_resume_bitwise_with_their_running_statistics(tmp_path):
    summary, lines = run(tmp_path / "straight", **LAYERED)
    assert lines[0].endswith(": ok") and summary["test_accuracy"] > 0.6
    assert summary["config"] | LAYERED == summary["config"]
    _, lines = run(tmp_path / "resumed", **LAYERED, stop_after_epoch=2)
    run(tmp_path / "resumed", **LAYERED, resume=True)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "straight")
    assert_same_checkpoint(
        tmp_path / "resumed/checkpoint.npz", tmp_path / "straight/checkpoint.npz"
    )
    config = trainer.Config.for_dataset("digits", **{**SMALL, **LAYERED})
    job, fresh = trainer.build(config, trainer.prepare(config), trainer.parallel.make_mesh())
    state, _ = checkpoint.restore(tmp_path / "straight/checkpoint.npz", fresh)
    running = state.net_state[1]  # dense, batch_norm, gelu, dropout, dense
    assert set(running) == {"mean", "var"} and np.abs(running["mean"]).max() > 0.01
    assert not np.array_equal(running["mean"], fresh.net_state[1]["mean"])  # it moved


@pytest.mark.parametrize(
    "activation, norm, names",
    [
        ("leaky_relu", "layer", ["dense", "layer_norm", "leaky_relu", "dropout", "dense"]),
        ("general_relu", "batch", ["dense", "batch_norm", "general_relu", "dropout", "dense"]),
        ("tanh", "none", ["dense", "tanh", "dropout", "dense"]),
    ],
)
def test_each_network_passes_the_gradient_check_in_train_mode(activation, norm, names):
    config = trainer.Config.for_dataset(
        "digits", hidden=(16,), activation=activation, norm=norm, dropout=0.3, grad="fused"
    )
    prepared = trainer.prepare(config)
    job, state = trainer.build(config, prepared, trainer.parallel.make_mesh())
    # A dense layer before batch_norm has no bias: the batch mean would cancel it.
    dense_keys = {"w"} if norm == "batch" else {"w", "b"}
    assert len(state.params) == len(names) and set(state.params[0]) == dense_keys
    if norm != "none":
        assert set(state.params[1]) == {"scale", "bias"}
    x, y = prepared.arrays["x_train"][:32], prepared.arrays["y_train"][:32]
    line, ok = trainer.gradient_check(config, job, state, x, y)
    assert ok and line.startswith("gradcheck: fused vs autodiff"), line
    broken = state._replace(params=[{**state.params[0], "w": state.params[0]["w"] * np.nan},
                                    *state.params[1:]])  # fmt: skip
    assert not trainer.gradient_check(config, job, broken, x, y)[1]  # the check can fail
