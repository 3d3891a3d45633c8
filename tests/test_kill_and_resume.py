"""The fault test: SIGKILL the training command at random moments, one of them during a
checkpoint write, and `--resume` each time; every run that finishes has bitwise the params
of a run that was never killed."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxnet.training import checkpoint, job

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--epochs=6", "--hidden=32", "--batch_size=100", "--seed=1"]


def _cmd(out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.train_mlp", f"--output_dir={out}", *args]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _same_params(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        keys = sorted(k for k in x.files if k.startswith("leaf_"))
        return keys == sorted(k for k in y.files if k.startswith("leaf_")) and all(
            np.array_equal(x[k], y[k]) for k in keys
        )


def _readable(workdir: Path) -> bool:
    """A checkpoint to resume from, or none at all (killed before the first save)."""
    paths = [p for p in checkpoint.rotated_paths(workdir / "checkpoint.npz", 2) if p.is_file()]
    for path in paths:
        try:
            checkpoint.read_meta(path)
            return True
        except checkpoint.CheckpointError:
            pass
    return not paths


def _kill(proc, workdir: Path, during_write: bool, rng: random.Random) -> bool:
    """SIGKILLs proc during a checkpoint write, or at a random moment once training has
    begun (after the gradcheck line); True if it was killed before it finished."""
    proc.stdout.readline()  # the gradcheck line, or "" if it has ended
    if during_write:
        while proc.poll() is None and not any(workdir.glob(".checkpoint.npz.*.tmp")):
            time.sleep(0.005)
    else:
        time.sleep(rng.uniform(0.0, 1.5))
    proc.kill()
    return proc.wait(timeout=60) == -signal.SIGKILL


KILLS = ("write", "random", "random", "random")


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_params(tmp_path):
    """SIGKILLs the job, first during a (slowed) checkpoint write, then at random moments;
    after each, `--resume` goes on, and each run that finishes has bitwise the params of a
    run that nobody killed."""
    straight = tmp_path / "straight"
    config = job.Config.for_dataset("digits", epochs=6, hidden=(32,), batch_size=100, seed=1)
    job.train_and_evaluate(config, straight)
    seed = random.randrange(2**32)
    rng, tried, survived, processes = random.Random(seed), 0, 0, 0
    # Every process loads the compiled epoch rather than compiling it: half the start-up
    # time. The suite's cache (tests/conftest.py) has it from the straight run above.
    cache = {} if os.environ.get("JAX_COMPILATION_CACHE_DIR") else {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }  # fmt: skip
    # A checkpoint write takes 0.3 s: room to hit it.
    env = _env(**{checkpoint.WRITE_DELAY_ENV: "0.3"}, **cache)
    for lineage in range(len(KILLS)):
        workdir, killed = tmp_path / f"run{lineage}", 0
        while True:  # until a process of this lineage finishes
            proc = subprocess.Popen(_cmd(workdir, *SMALL, "--resume"), cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            processes += 1
            if tried < len(KILLS) and _kill(proc, workdir, KILLS[tried] == "write", rng):
                tried, killed = tried + 1, killed + _readable(workdir)
                continue
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()[-3000:]
            break
        same = _same_params(workdir / "checkpoint.npz", straight / "checkpoint.npz")
        survived += killed if same else 0
        if tried == len(KILLS):
            break
    # The checks can fail: other params differ, and junk is no checkpoint to resume from.
    assert not _same_params(straight / "checkpoint.1.npz", straight / "checkpoint.npz")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/checkpoint.npz").write_bytes(b"junk")
    assert not _readable(tmp_path / "junk")
    print(f"fault test (seed {seed}): {tried} SIGKILLs tried, {survived} survived, "
          f"{processes} processes")  # fmt: skip
    assert tried == len(KILLS) and survived == tried, f"seed {seed}"
