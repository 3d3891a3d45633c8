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
from absl import flags
from conftest import assert_trees_close

import jaxnet
from experiments import common
from jaxnet import gradcheck, initializers
from jaxnet.lessons import matmul

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
    assert chains[("normal", False)]["verdict"] == "overflows"  # lesson 000: nan within 50
    assert 20 < chains[("normal", False)]["layer"] < 50
    assert chains[("kaiming_normal", True)]["verdict"] == "holds"
    assert chains[("kaiming_normal", False)]["verdict"] == "explodes"  # the 2.8e7
    assert chains[("torch_default", False)]["verdict"] == "vanishes"  # and its 1e-12
    assert "underflows = std exactly 0" in out
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


def test_bad_flags_fail_with_a_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = [("init_stats", "--chains=50by100"), ("matmul_ladder", "--shape=5,0,3"),
           ("bias_homework", "--steps=-1"), ("dynamic_net", "--momentum=2"),
           ("deep_norm", "--arms=relu,bogus")]  # fmt: skip
    for name, flag in bad:
        cmd = [sys.executable, "-m", f"experiments.{name}", flag, f"--output_dir={tmp_path}"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "Traceback" not in done.stderr, name
        assert "FATAL Flags parsing error" in done.stderr, name


def test_matmul_ladder_every_rung_equals_matmul(tmp_path):
    a = jax.random.normal(jax.random.key(0), (3, 7))
    b = jax.random.normal(jax.random.key(1), (7, 4))
    for name, (fn, _) in matmul.LADDER.items():
        assert_trees_close(fn(a, b), a @ b, rtol=1e-5, atol=1e-5, err_msg=name)
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
    # An earlier run's section, which a run of other sections must keep.
    devices = [{"devices": 1, "test_loss": 0.5, "wall_seconds": 2.0, "samples_per_second": 9.0}]
    (tmp_path / "benchmark.json").write_text(json.dumps({"devices": devices, "machine": {}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--sections=lesson", "--repeats=3",
           "--lesson_steps=20", f"--output_dir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "benchmark.json").read_text())
    assert {"jaxnet_scan", "numpy_float64", "numpy_float32"} <= set(results["lesson"]["ms"])
    assert "| jaxnet_scan |" in done.stdout
    assert results["devices"] == devices and "| 1 | 0.500000 |" not in done.stdout
    assert results["runs"]["lesson"]["command"].endswith(f"--output_dir={tmp_path}")
    assert results["runs"]["devices"]["command"] == "an earlier run"
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "| jaxnet_scan |" in markdown and "| 1 | 0.500000 |" in markdown
    bad = subprocess.run([*cmd[:3], "--sections=speed"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "unknown sections" in bad.stderr


def test_straight_through_trains_the_gates_that_autodiff_leaves(tmp_path):
    results, out = _run_script("straight_through", tmp_path, "--steps=250", "--hidden=16",
                               "--noise_features=16")  # fmt: skip
    arms = {r["arm"]: r for r in results["arms"]}
    sample, straight = arms["autodiff_sample"], arms["straight_through"]
    assert sample["max_logit_change"] == 0 and sample["open_fraction"] == 1  # untrained
    assert straight["max_logit_change"] > 1
    assert straight["open_noise"] < 0.25 < straight["open_pixels"]  # noise closes first
    assert straight["test_accuracy"] > 0.85 and "gates.png" in out


def test_deep_norm_small_shows_batch_norm_holding_where_relu_leaves_the_band(tmp_path):
    results, out = _run_script("deep_norm", tmp_path, "--dataset=digits", "--depth=4",
                               "--width=32", "--epochs=3", "--arms=relu,batch_norm",
                               "--learning_rate=0.3")  # fmt: skip
    arms = {r["arm"]: r for r in results["arms"]}
    assert arms["relu"]["first_step_out_of_band"] is not None  # lr 0.3 blows it up
    assert arms["batch_norm"]["first_step_out_of_band"] is None
    assert arms["batch_norm"]["test_accuracy"] > 0.8
    assert len(arms["batch_norm"]["final_std"]) == 4 and results["steps"] == 36
    assert "std_per_layer.png" in out and "colorful_dimension.png" in out


def test_layers_section_compares_with_the_plain_network():
    from benchmarks import layer_bench  # defines no flags, unlike the scripts

    results = layer_bench.section(3, batch=4, hidden=(8,), architectures=("bn_tanh",))
    results = json.loads(json.dumps(results))  # as benchmark.json holds it
    (net,) = results["networks"]
    rows = {r["mode"]: r for r in net["rows"]}
    assert list(rows) == list(layer_bench.MODES) and net["sizes"] == [784, 8, 10]
    assert rows["plain"]["vs_plain"]["median"] == 1.0
    assert all(r["dots"] == 5 and r["same_dots_as_plain"] for r in rows.values())
    assert rows["fused"]["residual_bytes"] < rows["plain"]["residual_bytes"]
    for kind in ("elementwise", "large passes"):
        assert rows["fused"]["kernels"][kind] < rows["plain"]["kernels"][kind], kind
    assert rows["floor"]["kernels"]["large passes"] == 0
    header, table = layer_bench.table(results)
    assert len(table) == 5 and all(len(row) == len(header) for row in table)
    lines = layer_bench.target_lines(results)
    assert any(line.startswith("- fused/plain residual bytes, bn_tanh: ") for line in lines)
    assert layer_bench.work_lines(results)[0].startswith("- bn_tanh, fused vs plain: passes over")


def test_layers_section_refuses_a_plain_network_that_computes_something_else():
    from benchmarks import layer_bench

    net, plain_loss, args = layer_bench.problem("relu_mlp", (8,), 4)
    progs = layer_bench.programs(net, plain_loss, args)
    layer_bench.check_same_step(progs)
    wrong = layer_bench.programs(net, lambda p, s, x, y: plain_loss(p, s, 2 * x, y), args)
    with pytest.raises(AssertionError, match="fused and plain differ"):
        layer_bench.check_same_step(wrong)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_the_plain_mlp_is_the_network_jaxnet_computes(loss):
    from jaxnet.lessons import reference as plain  # the benchmark's baseline

    keys = jax.random.split(jax.random.key(0), 3)
    params = jaxnet.init_mlp(keys[0], [6, 5, 3])
    x = jax.random.normal(keys[1], (4, 6))
    y = (jax.random.randint(keys[2], (4,), 0, 3) if loss == "cross_entropy"
         else jax.random.normal(keys[2], (4, 3)))  # fmt: skip
    got = jax.value_and_grad(plain.mlp_loss)(params, x, y, loss=loss)
    want = jax.value_and_grad(jaxnet.mlp_loss)(params, x, y, loss=loss)
    gradcheck.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if loss == "mse":  # the comparison tells a different loss apart
        assert not np.allclose(got[0], jaxnet.mlp_loss(params, x, y, loss="sum_squares"))


def test_gradcheck_speed_measures_both_and_the_hypothesis_run(tmp_path):
    # A subprocess, as the other scripts: its flags would clash with theirs in one process.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.gradcheck_speed", "--shapes=1",
           "--hypothesis_shapes=1", f"--output_dir={tmp_path}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "gradcheck_speed.json").read_text())
    layer = results["check_layer"]  # the PReLU passes, its planted bug fails
    assert layer["verdicts_right"] and layer["passing_s"] > 0 and layer["failing_s"] > 0
    assert len(results["per_shape"]) == 4
    for row in results["per_shape"]:
        assert row["check_s"] > 0 and row["check_grads_s"] > 0
        assert row["ratio"] == row["check_s"] / row["check_grads_s"]
    assert results["hypothesis"]["distinct_shapes"] == 1 and results["hypothesis"]["seconds"] > 0


def test_path_flags_expand_the_home_folder(monkeypatch):
    # `--output_dir=~/runs` reaches the script unexpanded (the shell expands only `~` that
    # starts a word); the scripts' path flags expand it themselves.
    monkeypatch.setenv("HOME", "/home/someone")
    values = flags.FlagValues()
    out = common.define_path("output_dir", "runs/x", "Where.", values)
    data = common.define_path("data_dir", None, "Data.", values)
    values(["prog", "--output_dir=~/runs/a", "--data_dir=rel/~x"])
    assert out.value == "/home/someone/runs/a" and data.value == "rel/~x"
    values.unparse_flags()
    values(["prog"])
    assert out.value == "runs/x" and data.value is None
