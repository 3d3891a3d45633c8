"""The training CLI, run as users run it: in a subprocess, with flags."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnet import data

ROOT = Path(__file__).resolve().parents[1]


def train_mlp(out: Path, *args, env=None, check=True, timeout=300):
    """Runs `python -m experiments.train_mlp --output_dir=out ...`; returns the process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, "-m", "experiments.train_mlp", f"--output_dir={out}", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_digits_run_writes_every_output(tmp_path):
    done = train_mlp(tmp_path, "--epochs=4")
    s = summary(tmp_path)
    assert s["dataset"] == "digits" and s["epochs"] == 4 and s["devices"] >= 1
    assert s["test_accuracy"] > 0.9 and s["test_loss"] > 0 and s["wall_seconds"] > 0
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2, 3, 4]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "checkpoint.npz").is_file()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gradcheck: fused vs autodiff") and lines[0].endswith(": ok")
    assert "epoch   4/4" in done.stdout and "samples/s" in done.stdout


@pytest.mark.parametrize("grad", ["ops", "autodiff"])
def test_grad_modes_and_mse_on_label_value(tmp_path, grad):
    train_mlp(tmp_path, "--epochs=3", f"--grad={grad}", "--loss=mse", "--hidden=50",
              "--learning_rate=1e-3", "--optimizer=sgd", "--validation_fraction=0.1")  # fmt: skip
    last = metrics(tmp_path)[-1]
    assert 0 <= last["test_accuracy"] <= 1 and "valid_loss" in last


def test_resume_after_a_stop_gives_the_same_run(tmp_path):
    flags = ["--epochs=5", "--hidden=32", "--batch_size=100"]  # 1438 examples: partial batch
    train_mlp(tmp_path / "straight", *flags)
    stopped = train_mlp(tmp_path / "stopped", *flags, "--stop_after_epoch=2")
    assert (
        "stopped after epoch 2" in stopped.stdout
        and not (tmp_path / "stopped/summary.json").exists()
    )
    refused = train_mlp(tmp_path / "stopped", *flags, check=False)
    assert refused.returncode != 0 and "pass --resume" in refused.stderr
    changed = train_mlp(
        tmp_path / "stopped", *flags[:-1], "--batch_size=50", "--resume", check=False
    )
    assert changed.returncode != 0 and "same flags" in changed.stderr
    resumed = train_mlp(tmp_path / "stopped", *flags, "--resume")
    assert "resumed from" in resumed.stdout and "epoch   3/5" in resumed.stdout
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "stopped")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "samples_per_second"} for r in rs]  # noqa: E731
    assert strip(a) == strip(b)  # identical losses and accuracies, epoch by epoch
    with (
        np.load(tmp_path / "straight/checkpoint.npz") as x,
        np.load(tmp_path / "stopped/checkpoint.npz") as y,
    ):
        for key in x.files:
            if key.startswith("leaf_"):
                np.testing.assert_array_equal(x[key], y[key])


def test_label_smoothing_reaches_the_loss_and_the_gradcheck(tmp_path):
    done = train_mlp(tmp_path, "--epochs=10", "--hidden=32", "--label_smoothing=0.2")
    assert done.stdout.splitlines()[0].endswith(": ok")
    s = summary(tmp_path)
    assert s["config"]["label_smoothing"] == 0.2
    # Smoothed targets cost at least their entropy (0.87 nats for 0.2 over 10 classes),
    # so the train loss stays above the plain run's.
    train_mlp(tmp_path / "plain", "--epochs=10", "--hidden=32")
    assert (
        metrics(tmp_path)[-1]["train_loss"] > 0.86 > metrics(tmp_path / "plain")[-1]["train_loss"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden=12,abc"], "--hidden must list positive integers"),
        (["--batch_size=0"], "batch_size"),
        (["--optimizer=adma"], "did you mean"),
        (["--dataset=cifar"], "dataset"),
        (["--epochs=-2"], "epochs"),
        (["--batch_size=5000"], "batch_size=5000 must lie in"),
        (["--dataset=digits", "--augment=flip"], "flip"),
        (["--label_smoothing=1.5"], "must lie in [0, 1)"),
        (["--loss=mse", "--label_smoothing=0.1"], "'cross_entropy' only"),
    ],
)
def test_bad_flags_give_one_line_and_no_traceback(tmp_path, args, message):
    done = train_mlp(tmp_path, *args, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert message in done.stderr


def test_bad_data_file_gives_one_line(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for stem in data.IDX_FILES.values():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x05abc"))
    done = train_mlp(tmp_path / "out", "--dataset=mnist", f"--data_dir={folder}",
                     "--nodownload", check=False)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip().startswith("train_mlp: error:")
        and "truncated or corrupt" in done.stderr
    )


FASHION = data.find_idx_files(data.DEBIAN_FASHION_MNIST)


@pytest.mark.skipif(FASHION is None, reason="Debian's dataset-fashion-mnist is not installed "
                    "(apt-get install dataset-fashion-mnist)")  # fmt: skip
def test_one_epoch_of_fashion_mnist_reaches_80_percent(tmp_path):
    train_mlp(tmp_path, "--dataset=fashion_mnist", "--epochs=1", "--hidden=256")
    assert summary(tmp_path)["test_accuracy"] >= 0.80
