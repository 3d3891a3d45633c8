"""Every lesson experiment runs small from its command line, and shows what it claims.

Each script runs in a subprocess, as a user runs it: the scripts define absl flags of the
same names (--seed, --steps, ...), which one process cannot hold twice.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnet import initializers, matmul, stats

ROOT = Path(__file__).resolve().parents[1]


def _run_script(name, tmp_path, *args):
    """Runs `python -m experiments.<name>`; returns (results.json, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", f"experiments.{name}", f"--output_dir={tmp_path}", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text()), done.stdout


def test_init_stats_small(tmp_path):
    results, out = _run_script("init_stats", tmp_path, "--batch=32", "--chains=50x100")
    single = {r["scheme"]: r for r in results["single_layer"]}
    assert 8 < single["normal"]["lin_std"] < 12  # randn: std about 10 for n=100
    assert abs(single["lecun_normal"]["lin_std"] - 1) < 0.1
    assert abs(single["lecun_normal"]["relu_mean"] - 0.40) < 0.06
    chains = {(r["scheme"], r["relu"]): r for r in results["chains"]}
    assert chains[("normal", False)]["status"] == "overflow"  # lesson 000: nan within 50 layers
    assert chains[("kaiming_normal", True)]["status"] == "ok"
    assert abs(chains[("lsuv", False)]["final_std"] - 1) < 0.1
    assert "lsuv" in out and "std_per_layer.png" in out


def test_lsuv_gives_unit_variance_per_layer():
    key = jax.random.key(0)
    params = [{"w": initializers.normal(k, (64, 64))} for k in jax.random.split(key, 5)]
    x = jax.random.normal(key, (128, 64))
    fitted = initializers.lsuv(params, x, key=key)
    for layer in fitted:
        h = x @ layer["w"]
        assert abs(float(h.std()) - 1) < 0.01
        x = jax.nn.relu(h)


def test_chain_detects_overflow_hidden_by_relu():
    x = jax.random.normal(jax.random.key(0), (8, 100))
    weights = stats.chain_weights(jax.random.key(1), initializers.normal, 60, 100)
    _, stds = stats.chain_stds(x, weights, relu=True)
    layer, status = stats.first_failure(stds)
    assert status == "overflow" and 30 < layer < 60


def test_bad_flags_fail_with_a_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = [("init_stats", "--chains=50by100"), ("matmul_ladder", "--shape=5,0,3"),
           ("bias_homework", "--steps=-1"), ("dynamic_net", "--momentum=2")]  # fmt: skip
    for name, flag in bad:
        cmd = [sys.executable, "-m", f"experiments.{name}", flag, f"--output_dir={tmp_path}"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "Traceback" not in done.stderr, name
        assert "FATAL Flags parsing error" in done.stderr, name


def test_matmul_ladder_every_rung_equals_matmul(tmp_path):
    a = jax.random.normal(jax.random.key(0), (3, 7))
    b = jax.random.normal(jax.random.key(1), (7, 4))
    for name, (fn, _) in matmul.LADDER.items():
        np.testing.assert_allclose(fn(a, b), a @ b, rtol=1e-5, atol=1e-5, err_msg=name)
    results, _ = _run_script("matmul_ladder", tmp_path, "--repeats=2")
    rungs = {(r["rung"], r["jit"]) for r in results["rows"]}
    assert ("python_loops", False) in rungs and ("matmul", True) in rungs
    assert all(r["max_abs_error"] < 1e-3 for r in results["rows"])


def test_broadcasting_small(tmp_path):
    results, _ = _run_script("broadcasting", tmp_path, "--batch=4", "--size=16")
    assert results["max_abs_diff_broadcast_vs_loop"] < 1e-5
    assert max(results["einsum_max_abs_diff"].values()) < 1e-5
    np.testing.assert_allclose(results["normalized_std"], 1, atol=1e-3)


def test_bias_homework_bug_is_shown(tmp_path):
    fine, out = _run_script("bias_homework", tmp_path / "fine")
    buggy, buggy_out = _run_script("bias_homework", tmp_path / "buggy", "--homework_bug")
    assert len(fine["hand_losses"]) == 1001 and "1000" in out
    assert fine["max_abs_loss_diff"] < 1e-3
    assert buggy["max_abs_loss_diff"] > 100 * max(fine["max_abs_loss_diff"], 1e-3)
    assert "axis of" in buggy_out and "axis of" not in out


def test_custom_function_small(tmp_path):
    results, out = _run_script(
        "custom_function", tmp_path, "--relu_steps=100", "--legendre_steps=300"
    )
    assert results["my_relu"]["gradient_ok"] and results["legendre"]["gradient_ok"]
    assert results["my_relu"]["losses"][-1] < results["my_relu"]["losses"][0]
    losses = results["legendre"]["losses"]
    assert losses[-1] < losses[0] and "Result: y = " in out


@pytest.mark.parametrize("grad", ["hand", "autodiff"])
def test_dynamic_net_small(tmp_path, grad):
    results, _ = _run_script("dynamic_net", tmp_path, "--steps=120", f"--grad={grad}")
    assert [r["repeats"] for r in results["checks"]] == [0, 1, 2, 3]
    assert all(r["ok"] for r in results["checks"])
    assert np.mean(results["losses"][-10:]) < results["first_loss"] / 5
    assert set(results["repeats"]) <= {0, 1, 2, 3} and len(set(results["repeats"])) > 1


def test_benchmark_writes_table_and_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "experiments.benchmark", "--sections=lesson", "--repeats=3",
           f"--output_dir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "benchmark.json").read_text())
    assert {"jaxnet_scan", "numpy_float64", "numpy_float32"} <= set(results["lesson"]["ms"])
    assert "| jaxnet_scan |" in done.stdout
    bad = subprocess.run([*cmd[:3], "--sections=speed"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "unknown sections" in bad.stderr


def test_gradcheck_speed_measures_both_and_the_hypothesis_run():
    from experiments import gradcheck_speed

    row = gradcheck_speed.time_per_shape("gelu", order=1, shapes=1)
    assert row["check_s"] > 0 and row["check_grads_s"] > 0 and row["check_grads_passed"]
    assert row["ratio"] == row["check_s"] / row["check_grads_s"]
    run = gradcheck_speed.hypothesis_run(1)
    assert run["distinct_shapes"] == 1 and run["seconds"] > 0
