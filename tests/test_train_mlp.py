"""The training command line, run as users run it: flags, exit codes, one-line messages,
signals. The job itself is tested in-process in test_trainer.py, and SIGKILLed in
test_kill_and_resume.py."""

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jaxnet import checkpoint, data

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test runs the training command in a subprocess


def _cmd(out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.train_mlp", f"--output_dir={out}", *args]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def train_mlp(out: Path, *args, check=True, timeout=300):
    """Runs `python -m experiments.train_mlp --output_dir=out ...`; returns the process."""
    done = subprocess.run(_cmd(out, *args), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_command_writes_every_output_and_refuses_to_overwrite_it(tmp_path):
    done = train_mlp(tmp_path, "--epochs=2", "--hidden=32")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gradcheck: fused vs autodiff") and lines[0].endswith(": ok")
    assert lines[2].startswith("epoch   2/2") and "samples/s" in lines[2]
    assert lines[3].startswith("test accuracy ") and lines[3].endswith(f"wrote {tmp_path}")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 2
    again = train_mlp(tmp_path, "--epochs=2", "--hidden=32", check=False)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("train_mlp: error:") and "pass --resume" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden=12,abc"], "--hidden must list positive integers"),
        (["--batch_size=0"], "batch_size"),
        (["--optimizer=adma"], "did you mean"),
        (["--dataset=cifar"], "dataset"),
        (["--epochs=-2"], "epochs"),
        (["--clip_grad_norm=-1"], "clip_grad_norm"),
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


def test_a_diverging_run_stops_with_a_nonzero_status_and_saves_nothing(tmp_path):
    done = train_mlp(tmp_path, "--optimizer=sgd", "--learning_rate=1e6", "--epochs=3",
                     check=False)  # fmt: skip
    assert done.returncode == 1 and "epoch   1/3" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train_mlp: error: the training loss became non-finite (")
    assert "at epoch 1, step " in last and "no checkpoint was written" in last
    assert "--learning_rate (now 1e+06)" in last and "--clip_grad_norm" in last
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())


def test_ctrl_c_checkpoints_the_epoch_and_says_how_to_resume(tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path, "--epochs=500", "--hidden=32"), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in proc.stdout:
        if line.startswith("epoch   1/500"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("train_mlp: stopped by SIGINT after epoch ")
    assert last.endswith("run the same command with --resume to continue.")
    epoch = int(last.split("after epoch ")[1].split()[0])
    assert checkpoint.read_meta(tmp_path / "checkpoint.npz")["epoch"] == epoch < 500


FASHION = data.find_idx_files(data.DEBIAN_FASHION_MNIST)


@pytest.mark.skipif(FASHION is None, reason="Debian's dataset-fashion-mnist is not installed "
                    "(apt-get install dataset-fashion-mnist)")  # fmt: skip
def test_one_epoch_of_fashion_mnist_reaches_80_percent(tmp_path):
    train_mlp(tmp_path, "--dataset=fashion_mnist", "--epochs=1", "--hidden=256")
    assert json.loads((tmp_path / "summary.json").read_text())["test_accuracy"] >= 0.80
