"""benchmarks/gpt_bench.py at a tiny GPT: what it records, and that the sides agree."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from conftest import cpu_env

from benchmarks import gpt_bench
from jaxnet.gradcheck import _battery
from jaxnet.training import files

TINY = gpt_bench.Config(vocab=11, n_layer=1, n_head=2, n_embd=8, block_size=8, batch=2)


def test_the_gpt_benchmark_records_both_sides_and_their_agreement(tmp_path):
    # Named nanogpt_cpu so that its target line is made; compiled with gradcheck's options
    # (a fifth of the compile time). Behaviour only: no figure is asserted.
    results = gpt_bench.run({"nanogpt_cpu": TINY}, {"nanogpt_cpu": 2}, ("fused", "plain"),
                            compiler_options=_battery.COMPILER_OPTIONS)  # fmt: skip
    path = files.write_json_atomic(tmp_path / "gpt.json", results)
    results = json.loads(path.read_text())  # as gpt.json holds it
    assert set(results) == {"machine", "load_average", "configs", "targets"}
    assert set(results["load_average"]) == {"before", "after"}
    run = results["configs"]["nanogpt_cpu"]
    assert run["config"]["n_embd"] == 8 and run["rounds"] == 2 and run["parameters"] > 0
    assert list(run["modes"]) == ["fused", "plain"]
    for row in run["modes"].values():
        assert row["ms"] > 0 and row["grad_temp_bytes"] > 0 and row["step_temp_bytes"] > 0
        assert set(row["speedup_vs_plain"]) == {"median", "q1", "q3", "min", "max"}
    assert run["modes"]["plain"]["speedup_vs_plain"]["median"] == 1.0
    assert run["modes"]["plain"]["max_rel_grad_diff_vs_plain"] == 0.0
    assert run["modes"]["fused"]["max_rel_grad_diff_vs_plain"] < 1e-4  # float32
    ((name, value, target, met),) = results["targets"]
    assert value == run["modes"]["fused"]["speedup_vs_plain"]["median"] and target == 1.3
    (line,) = gpt_bench.target_lines(results)
    assert line.startswith("PASS: " if met else "FAIL: ") and name in line
    table = gpt_bench.table(results).splitlines()
    assert len(table) == 4 and table[2].startswith("| nanogpt_cpu | fused | ")


def test_the_gradient_comparison_names_the_worst_leaf():
    want = {"a": np.ones(3), "b": np.full(2, 4.0)}
    got = {"a": np.ones(3), "b": np.array([4.0, 5.0])}
    assert gpt_bench.worst_leaf(got, want) == (0.25, "['b']")


def test_the_flags_refuse_unknown_configurations_and_modes_without_plain():
    for bad in (dict(configs=["nanogpt_cpu", "huge"]), dict(modes=["fused", "autodiff"])):
        with pytest.raises(flags.IllegalFlagValueError):
            with flagsaver.flagsaver(**bad):
                pass
    with flagsaver.flagsaver(configs=["long"], modes=["plain", "autodiff"]):
        assert flags.FLAGS.modes == ["plain", "autodiff"]


@pytest.mark.slow
def test_the_cpu_split_benchmark_times_both_meshes_which_agree(tmp_path):
    # Two simulated devices in a fresh process, a tiny GPT on a made-up text, one round.
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on a mat and then it ran away.\n" * 60)
    script = textwrap.dedent(f"""
        import json
        from benchmarks import cpu_split
        from jaxnet import text
        from jaxnet.training import lm, parallel
        assert parallel.split_cpu(4, 2) == 2
        config = lm.GPTConfig(text={str(corpus)!r}, n_layer=1, n_head=2, n_embd=8,
                              block_size=8, batch_size=4, eval_iters=2)
        results = cpu_split.measure(config, text.load(config.text), rounds=2, chunk=2)
        print(json.dumps(results))
        print(cpu_split.table(results))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=cpu_env(),
                          cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.splitlines()[0])
    assert results["devices"] == 2 and results["rounds"] == 2
    assert results["first_chunk_max_loss_diff"] <= 1e-5  # the same training on either mesh
    for what in ("chunk", "estimate"):
        row = results[what]
        assert row["one_ms"] > 0 and row["split_ms"] > 0
        assert row["speedup"]["q1"] <= row["speedup"]["median"] <= row["speedup"]["q3"]
    assert "| chunk (ms / step) |" in done.stdout
