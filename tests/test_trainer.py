"""The main job, in-process: train_and_evaluate on the digits (tiny, offline)."""

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jaxnet.training import checkpoint, lock
from jaxnet.training import job as trainer  # the main job; `job` names a built one below

SMALL = dict(epochs=4, hidden=(32,), batch_size=100)  # 1438 examples: a partial last batch


def run(workdir: Path, *, overwrite=False, **overrides) -> tuple[dict | None, list[str]]:
    """(summary, the lines logged) of a digits run with SMALL, then overrides."""
    lines: list[str] = []
    config = trainer.Config.for_dataset("digits", **{**SMALL, **overrides})
    summary = trainer.train_and_evaluate(config, workdir, log=lines.append, overwrite=overwrite)
    return summary, lines


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


def test_a_run_writes_summary_metrics_and_two_checkpoints(straight):
    s = json.loads((straight / "summary.json").read_text())
    assert s["dataset"] == "digits" and s["epochs"] == 4 and s["devices"] >= 1
    assert s["test_accuracy"] > 0.6 and s["test_loss"] > 0 and s["wall_seconds"] > 0
    assert s["sizes"] == [64, 32, 10] and s["config"]["clip_grad_norm"] == 0.0
    assert "resume" not in s["config"] and s["final"]["epoch"] == 4
    assert s["valid_accuracy"] == s["final"]["valid_accuracy"] > 0.6 and s["valid_loss"] > 0
    assert [r["epoch"] for r in metrics(straight)] == [1, 2, 3, 4]
    assert all("valid_loss" in r and "test_loss" not in r for r in metrics(straight))
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


def test_label_smoothing_reaches_the_loss(tmp_path):
    smooth, _ = run(tmp_path / "smooth", epochs=10, label_smoothing=0.2)
    plain, _ = run(tmp_path / "plain", epochs=10)
    assert smooth["config"]["label_smoothing"] == 0.2
    # Smoothed targets cost at least their entropy (0.87 nats for 0.2 over 10 classes).
    assert smooth["final"]["train_loss"] > 0.86 > plain["final"]["train_loss"]


def test_the_same_run_again_resumes_bitwise_then_shows_the_summary(tmp_path, straight):
    summary, lines = run(tmp_path, stop_after_epoch=2)
    assert summary is None
    assert lines[-1] == "stopped after epoch 2; run the same command again to continue"
    assert not (tmp_path / "summary.json").exists()
    newest = tmp_path / "checkpoint.npz"
    refusal = (rf"^{re.escape(str(newest))} was written with other flags: --batch_size=100 "
               r"\(now 50\), --seed=0 \(now 3\)\. Run with its flags to continue it or see its "
               "summary, add --overwrite")  # fmt: skip
    with pytest.raises(ValueError, match=refusal):
        run(tmp_path, batch_size=50, seed=3)
    with pytest.raises(ValueError, match=r"--hidden=32 \(now 16\)"):
        run(tmp_path, hidden=(16,), resume=True)  # named, before the arrays fail to fit
    _, lines = run(tmp_path)  # no --resume: the same command goes on
    assert lines[0] == f"resumed from {newest} after epoch 2"
    assert metrics(tmp_path) == metrics(straight)
    assert_same_checkpoint(newest, straight / "checkpoint.npz")
    for resume in (False, True):
        again, lines = run(tmp_path, resume=resume)
        assert lines == [f"{tmp_path}: already trained; --overwrite to train again"]
        assert again == json.loads((tmp_path / "summary.json").read_text())


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
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint.*--overwrite"):
        run(tmp_path, resume=True)


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


def test_sigterm_checkpoints_the_epoch_and_resume_finishes_the_run(tmp_path, straight):
    def log(line):
        if line.startswith("epoch   2/"):
            os.kill(os.getpid(), signal.SIGTERM)  # taken between epochs, after this one

    config = trainer.Config.for_dataset("digits", **SMALL)
    with pytest.raises(trainer.Interrupted, match=r"SIGTERM after epoch 2 of 4.*same command"):
        trainer.train_and_evaluate(config, tmp_path, log=log)
    assert checkpoint.read_meta(tmp_path / "checkpoint.npz")["epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    run(tmp_path, resume=True)
    assert_same_checkpoint(tmp_path / "checkpoint.npz", straight / "checkpoint.npz")


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


# ------------------------------------------------- the output folder: one run, checked


def copy_run(straight: Path, workdir: Path, names=("checkpoint.npz", "metrics.jsonl")) -> Path:
    """workdir holding copies of the straight run's files `names`."""
    workdir.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(straight / name, workdir / name)
    return workdir


def test_overwrite_replaces_the_run_and_no_other_file(tmp_path, straight):
    copy_run(straight, tmp_path, ["summary.json", "checkpoint.npz", "checkpoint.1.npz"])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--overwrite discards the run that --resume"):
        run(tmp_path, resume=True, overwrite=True)
    summary, lines = run(tmp_path, epochs=2, seed=1, overwrite=True)
    assert lines[1] == (f"--overwrite: removed the earlier run's summary.json, checkpoint.npz, "
                        f"checkpoint.1.npz from {tmp_path}")  # fmt: skip
    assert summary["config"]["seed"] == 1 and [r["epoch"] for r in metrics(tmp_path)] == [1, 2]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_validation_split_is_carved_from_training_the_same_for_every_seed():
    split = trainer.prepare(trainer.Config.for_dataset("digits")).arrays
    other = trainer.prepare(trainer.Config.for_dataset("digits", seed=5)).arrays
    assert len(split["x_valid"]) == 144 and len(split["x_train"]) == 1438 - 144
    np.testing.assert_array_equal(split["x_valid"], other["x_valid"])
    fractions = {k: d["validation_fraction"] for k, d in trainer.run_config.DEFAULTS.items()}
    assert round(fractions["mnist"] * 60000) == round(fractions["fashion_mnist"] * 60000) == 5000
    assert fractions["digits"] == 0.1 and fractions["synthetic"] == 0.0


def test_a_finished_regression_run_again_gives_its_summary_with_nan_accuracy(tmp_path):
    config = trainer.Config.for_dataset("synthetic", epochs=3)
    first = trainer.train_and_evaluate(config, tmp_path)
    again = trainer.train_and_evaluate(dataclasses.replace(config, resume=True), tmp_path)
    assert isinstance(again["test_accuracy"], float) and math.isnan(again["test_accuracy"])
    assert again["test_loss"] == first["test_loss"] and again["valid_loss"] is None
    assert trainer.summary_line(again, tmp_path).startswith(
        "test accuracy n/a (regression), test loss "
    )


def _rewrite(path: Path, meta_change=None, nan=False) -> None:
    """Writes path again with its record changed by meta_change, or its first leaf NaN."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta_json"]))
    arrays["meta_json"] = np.array(json.dumps(meta_change(meta) if meta_change else meta))
    arrays["leaf_00000"] = arrays["leaf_00000"] * (np.nan if nan else 1)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "meta_change, nan, message",
    [
        (None, True, r"holds non-finite values \(NaN or inf\) in \['params'\]\[0\]\['b'\], "
                     "which save never writes"),
        (lambda m: {k: v for k, v in m.items() if k != "epoch"}, False,
         "its record says epoch None, not one of this run's 1..4; delete it"),
        (lambda m: {**m, "epoch": 99}, False, "its record says epoch 99, not one of this run's"),
        (lambda m: {**m, "epoch": "3"}, False, "its record says epoch '3', not one of"),
        (lambda m: {**m, "config": 3}, False, r"its record holds no run settings \('config'\)"),
        (lambda m: [m], False, "its record holds no run settings"),
    ],
)  # fmt: skip
def test_a_checkpoint_with_bad_contents_is_refused_naming_it(tmp_path, straight, meta_change,
                                                               nan, message):  # fmt: skip
    newest = copy_run(straight, tmp_path) / "checkpoint.npz"
    _rewrite(newest, meta_change, nan)
    lines = []
    with pytest.raises(checkpoint.CheckpointError, match=rf"^{re.escape(str(newest))}: {message}"
                       ) as caught:  # fmt: skip
        trainer.train_and_evaluate(trainer.Config.for_dataset("digits", **SMALL), tmp_path,
                                   log=lines.append)  # fmt: skip
    assert not any(line.startswith("gradcheck") for line in lines)  # refused before it
    assert "--overwrite" in str(caught.value) and "\n" not in str(caught.value)


def test_an_output_dir_that_is_a_file_or_read_only_is_refused_before_training(
    tmp_path, monkeypatch
):
    config, lines = trainer.Config.for_dataset("digits", **SMALL), []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--output_dir \S+/file is a file, not a folder; choose"):
        trainer.train_and_evaluate(config, tmp_path / "file", log=lines.append)
    with pytest.raises(ValueError, match=r"--output_dir \S+/file/sub cannot be created \(Not a"):
        trainer.train_and_evaluate(config, tmp_path / "file/sub", log=lines.append)
    (tmp_path / "ro").mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes in a folder of mode 0o555: say it is read-only
        monkeypatch.setattr(lock.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=r"--output_dir \S+/ro is read-only; make it writable"):
        trainer.train_and_evaluate(config, tmp_path / "ro", log=lines.append)
    assert lines == []


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_killed_runs_stale_lock_and_temporaries_are_cleared(tmp_path, straight):
    copy_run(straight, tmp_path)  # its last checkpoint, and no summary yet
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "token": "x"}
    (tmp_path / lock.LOCK_NAME).write_text(json.dumps(stale))
    ours = [".metrics.jsonl.ab12cd34.tmp", ".checkpoint.npz.x_y_z123.tmp",
            ".summary.json.abcdefgh.tmp", f".{lock.LOCK_NAME}.0123abcd.tmp"]  # fmt: skip
    theirs = ["notes.tmp", ".metrics.jsonl.tmp", ".other.abcdefgh.tmp", ".metrics.jsonl.ab.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    summary, lines = run(tmp_path)
    assert lines[0].endswith("after epoch 4") and len(lines) == 2  # resumed; nothing to train
    assert (
        summary["test_accuracy"]
        == json.loads((straight / "summary.json").read_text())["test_accuracy"]
    )
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"checkpoint.npz", "metrics.jsonl", "summary.json", *theirs}


def test_an_empty_workdir_is_refused_not_the_current_folder():
    config = trainer.Config.for_dataset("synthetic", epochs=1)
    with pytest.raises(ValueError, match="workdir is empty"):
        trainer.train_and_evaluate(config, "")
