"""One run per folder: a second run is refused naming the holder, a stale lock is taken over,
and two training commands on one folder leave exactly one training."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jaxnet.training import checkpoint, job, lock

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _write_lock(folder: Path, **record) -> Path:
    path = folder / lock.LOCK_NAME
    path.write_text(json.dumps({"host": HOST, "token": "theirs", **record}))
    return path


def test_a_second_acquire_is_refused_naming_the_folder_and_the_holder(tmp_path):
    held = lock.acquire(tmp_path)
    refusal = (
        rf"^{re.escape(str(tmp_path))} is in use by another run \(pid {os.getpid()} on "
        rf"host {re.escape(HOST)}, since .*\); wait for it to end or choose another "
        rf"--output_dir\. If that process is gone, delete .*{lock.LOCK_NAME}\.$"
    )
    with pytest.raises(lock.FolderLocked, match=refusal):
        lock.acquire(tmp_path)
    held.release()
    assert list(tmp_path.iterdir()) == []
    lock.acquire(tmp_path).release()


@pytest.mark.parametrize(
    "record",
    [dict(pid=-1), dict(pid=os.getpid(), start="1")],  # no such pid; a pid since reused
)
def test_a_stale_lock_is_taken_over(tmp_path, record):
    record = {**record, "pid": _dead_pid()} if record["pid"] == -1 else record
    path = _write_lock(tmp_path, **record)
    held = lock.acquire(tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    held.release()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_of_another_host_or_not_a_lock_is_refused(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid(), host="elsewhere")
    with pytest.raises(lock.FolderLocked, match=r"in use by another run \(pid \d+ on host else"):
        lock.acquire(tmp_path)  # its pid cannot be checked from here
    (tmp_path / lock.LOCK_NAME).write_text("{half a rec")
    with pytest.raises(lock.FolderLocked, match=r"jaxnet.lock is not a jaxnet lock .* delete it"):
        lock.acquire(tmp_path)


def test_a_lock_taken_from_a_run_is_noticed_before_it_writes(tmp_path):
    held = lock.acquire(tmp_path)
    _write_lock(tmp_path, pid=12345)  # as if another process broke in
    with pytest.raises(lock.FolderLocked, match="names pid 12345; stopping so that two runs"):
        held.verify()
    held.release()  # leaves the other's lock
    assert json.loads((tmp_path / lock.LOCK_NAME).read_text())["pid"] == 12345


def _cmd(out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.train_mlp", f"--output_dir={out}", *args]


def test_two_runs_on_one_folder_one_trains_and_the_other_is_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(_cmd(tmp_path, "--epochs=10000", "--hidden=32"), cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in first.stdout:
        if line.startswith("epoch   1/10000"):
            break
    second = subprocess.run(_cmd(tmp_path, "--epochs=10000", "--hidden=32", "--seed=1"), cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert second.returncode == 1 and second.stdout == ""  # refused before the gradcheck
    assert second.stderr.startswith(f"train_mlp: error: {tmp_path} is in use by another run "
                                    f"(pid {first.pid} on host {HOST}, since ")  # fmt: skip
    assert first.returncode == 128 + signal.SIGINT, err[-3000:]
    epoch = int(err.strip().splitlines()[-1].split("after epoch ")[1].split()[0])
    meta = checkpoint.read_meta(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == epoch and meta["config"]["seed"] == 0  # the first run's, intact
    assert [r["epoch"] for r in job.read_metrics(tmp_path)] == list(range(1, epoch + 1))
    assert not (tmp_path / lock.LOCK_NAME).exists() and not (tmp_path / "summary.json").exists()
