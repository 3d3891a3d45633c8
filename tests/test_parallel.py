"""Data parallelism: the same training on 1 device, 8 simulated devices, and 2 processes.

Simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) need a fresh
process, so every run here is a subprocess of the training CLI.
"""

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import cpu_env

from jaxnet.training import parallel

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--dataset=digits", "--epochs=3", "--batch_size=64", "--seed=3"]


def _env(devices: int) -> dict:
    # The suite's own XLA_FLAGS (tests/conftest.py: faster compiles) kept, the devices added.
    return cpu_env(devices, PYTHONPATH=str(ROOT))


def _cmd(out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.train_mlp", f"--output_dir={out}", *args]


def _run(out: Path, devices: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(out, *args), cwd=ROOT, env=_env(devices), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(out: Path, per_process_args, devices=2, timeout=300):
    port = _free_port()
    procs = [
        subprocess.Popen(
            _cmd(out, *FLAGS, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                 f"--process_id={i}", "--distributed_timeout=60", *per_process_args[i]),
            cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    done = _run(out, 1, *FLAGS)
    assert done.returncode == 0, done.stderr[-3000:]
    return _summary(out)


def test_eight_devices_train_like_one(tmp_path, one_device):
    done = _run(tmp_path, 8, *FLAGS)
    assert done.returncode == 0, done.stderr[-3000:]
    eight = _summary(tmp_path)
    assert one_device["devices"] == 1 and eight["devices"] == 8
    assert "on 8 device(s)" in done.stdout
    np.testing.assert_allclose(eight["test_loss"], one_device["test_loss"], rtol=1e-3)


def test_batch_norm_statistics_are_those_of_the_global_batch(tmp_path):
    # Per-device statistics (8 rows each on 8 devices) would train another network.
    runs = {d: _run(tmp_path / str(d), d, *FLAGS, "--norm=batch") for d in (1, 8)}
    for done in runs.values():
        assert done.returncode == 0, done.stderr[-3000:]
    one, eight = (_summary(tmp_path / str(d)) for d in (1, 8))
    assert one["config"]["norm"] == "batch" and eight["devices"] == 8
    np.testing.assert_allclose(eight["test_loss"], one["test_loss"], rtol=1e-3)


def test_two_processes_of_two_devices_train_like_one(tmp_path, one_device):
    results = _two_processes(tmp_path, [[], []])
    for code, _, err in results:
        assert code == 0, err[-3000:]
    two = _summary(tmp_path)
    assert two["devices"] == 4 and two["processes"] == 2
    np.testing.assert_allclose(two["test_loss"], one_device["test_loss"], rtol=1e-3)
    assert "epoch   3/3" in results[0][1] and "epoch" not in results[1][1]  # process 0 reports


def test_mismatched_flags_across_processes_are_refused(tmp_path):
    results = _two_processes(tmp_path, [["--learning_rate=0.01"], ["--learning_rate=0.02"]])
    for code, _, err in results:
        assert code != 0 and "differ between processes" in err and "Traceback" not in err


def test_unreachable_coordinator_gives_up_in_bounded_time(tmp_path):
    start = time.monotonic()
    cmd = _cmd(tmp_path, *FLAGS, f"--coordinator_address=127.0.0.1:{_free_port()}",
               "--num_processes=2", "--process_id=1", "--distributed_timeout=5")  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "could not join the coordinator" in done.stderr
    assert time.monotonic() - start < 60


def test_batch_not_divisible_by_devices(tmp_path):
    done = _run(tmp_path, 8, *FLAGS[:2], "--batch_size=60")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "does not split evenly over 8 devices" in done.stderr and "56 or 64" in done.stderr


def test_mesh_and_shardings_in_process():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices())
    placed = parallel.put(np.arange(8.0), parallel.sharded_batch(mesh))
    assert placed.sharding == parallel.sharded_batch(mesh)
    with pytest.raises(ValueError, match="process_id=3 must lie in"):
        parallel.initialize("127.0.0.1:1", 2, 3)


def test_split_cpu_refuses_bad_counts_and_a_count_already_chosen(monkeypatch):
    jax.devices()  # this process's backend has started
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(ValueError, match=r"batch_size=0 must be a positive int"):
        parallel.split_cpu(0)
    with pytest.raises(ValueError, match=r"devices=-1 must be an int >= 0"):
        parallel.split_cpu(12, -1)
    with pytest.raises(ValueError, match="does not split evenly over 5 devices"):
        parallel.split_cpu(12, 5)
    with pytest.raises(ValueError, match="cannot split the CPU into 2 devices: JAX has started"):
        parallel.split_cpu(12, 2)
    assert parallel.split_cpu(12) is None  # 0 leaves a started backend as it is
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    with pytest.raises(ValueError, match="XLA_FLAGS sets --xla_force_host_platform_device_count"):
        parallel.split_cpu(12, 2)


def test_split_cpu_makes_one_device_per_core_as_many_as_divide_the_batch():
    # A fresh process (the count is set before JAX starts), told it has 8 cores.
    script = (
        "import jax\n"
        "from jaxnet.training import parallel\n"
        "parallel.cpu_cores = lambda: 8\n"
        "print(parallel.split_cpu(12), parallel.split_cpu(12), jax.device_count('cpu'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["6", "None", "6"]  # 6 divides 12; 8 does not


def test_cpu_cores_counts_the_affinity_within_a_cgroup_quota(monkeypatch):
    import builtins

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/sys/fs/cgroup/cpu.max":
            return io.StringIO(quota)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(builtins, "open", fake_open)
    for quota, cores in (("200000 100000\n", 2), ("max 100000\n", 64), ("50000 100000", 1)):
        assert parallel.cpu_cores() == cores, quota
