"""benchmarks.nanogpt_bench without torch: the command, the log, the jaxnet side, the report."""

import shlex
import sys

import pytest

from benchmarks import nanogpt_bench as bench

ISSUE_19 = (
    "python train.py config/train_shakespeare_char.py --dataset=fortunes_char --device=cpu "
    "--compile=False --eval_iters=200 --eval_interval=1000 --log_interval=100 --block_size=64 "
    "--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
    "--lr_decay_iters=2000 --dropout=0.0"
)
LOG = """\
step 0: train loss 4.7133, val loss 4.7168
iter 0: loss 4.7120, time 9000.00ms, mfu -100.00%
iter 1: loss 4.6731, time 100.00ms, mfu -100.00%
iter 2: loss 4.6742, time 300.00ms, mfu -100.00%
iter 3: loss 4.6187, time 200.00ms, mfu -100.00%
step 4: train loss 3.9909, val loss 4.0051
saving checkpoint to /tmp/out
iter 4: loss 3.9764, time 8000.00ms, mfu 0.00%
""".splitlines()


def test_the_command_at_2000_steps_is_issue_19s():
    argv = bench.nanogpt_command("python", "fortunes_char", 2000, "/tmp/out")
    assert shlex.join(argv) == ISSUE_19 + " --out_dir=/tmp/out --wandb_log=False"


def test_a_short_run_still_ends_on_an_evaluation_and_logs_its_steps():
    assert bench.intervals(2000) == (1000, 100)
    assert bench.intervals(20) == (20, 1)
    assert bench.intervals(1) == (1, 1)


def test_dataset_names_are_plain_identifiers():
    assert bench.dataset_name("fortunes") == "fortunes_char"
    assert bench.dataset_name("/data/tiny shakespeare/input.txt") == "input_char"
    assert bench.dataset_name("/x/les-misérables.txt") == "les_mis_rables_char"


def test_the_log_gives_the_last_evaluation_and_the_median_step_without_one():
    log = bench.parse_log(LOG, eval_interval=4)
    assert log["evals"] == [[0, 4.7133, 4.7168], [4, 3.9909, 4.0051]]
    assert (log["train_loss"], log["val_loss"]) == (3.9909, 4.0051)
    assert log["ms_per_iter"] == 200.0  # steps 1, 2, 3: 0 and 4 include an evaluation
    with pytest.raises(ValueError, match="no 'step N: train loss X, val loss Y' line"):
        bench.parse_log(LOG[1:5], eval_interval=4)


def test_the_jaxnet_command_gets_its_values_and_an_output_dir():
    argv = bench.jaxnet_argv("python -m experiments.gpt --steps={max_iters}", "/o", max_iters=9)
    assert argv == [sys.executable, "-m", "experiments.gpt", "--steps=9", "--output_dir=/o"]
    argv = bench.jaxnet_argv("gpt --out='{output_dir}/x' --text={text}", "/o", text="a b")
    assert argv == ["gpt", "--out=/o/x", "--text=a b"]


STUB = """\
import json, sys
out = sys.argv[1]
json.dump({"val_loss": 2.5, "seconds": 1.5, "ms_per_iter": 30.0, "steps": int(sys.argv[2])},
          open(out + "/results.json", "w"))
print("trained")
"""


def test_run_jaxnet_times_the_command_and_reads_its_results(tmp_path):
    script = tmp_path / "stub.py"
    script.write_text(STUB)
    lines = []
    run = bench.run_jaxnet(f"python {script} {{output_dir}} {{max_iters}}", lines.append,
                           max_iters=7)  # fmt: skip
    assert lines == ["trained"] and run["results"]["steps"] == 7
    assert (run["side"], run["val_loss"], run["ms_per_iter"]) == ("jaxnet", 2.5, 30.0)
    assert run["wall_seconds"] > 0 and len(run["load_before"]) == 3
    with pytest.raises(RuntimeError, match="wrote no results.json"):
        bench.run_jaxnet("python -c pass {output_dir}")
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\):\nboom"):
        bench.run_jaxnet("python -c \"print('boom'); raise SystemExit(3)\" {output_dir}")


def _run(round_, side, wall, ms):
    return {"round": round_, "side": side, "wall_seconds": wall, "ms_per_iter": ms,
            "val_loss": 2.0, "train_loss": None, "load_before": [1.0] * 3,
            "load_after": [2.0] * 3}  # fmt: skip


def test_rounds_alternate_and_the_summary_pairs_them():
    assert bench.rounds_order(3, bench.SIDES) == [
        (0, "nanogpt"), (0, "jaxnet"), (1, "jaxnet"), (1, "nanogpt"), (2, "nanogpt"),
        (2, "jaxnet"),
    ]  # fmt: skip
    runs = [_run(0, "nanogpt", 100, 50), _run(0, "jaxnet", 50, 40),
            _run(1, "jaxnet", 80, 60), _run(1, "nanogpt", 100, 50)]  # fmt: skip
    summary = bench.summary(runs)
    assert summary["nanogpt"]["wall_seconds"] == 100 and summary["jaxnet"]["ms_per_iter"] == 50
    assert summary["jaxnet/nanogpt wall_seconds"] == {"median": 0.65, "min": 0.5, "max": 0.8}
    assert "jaxnet/nanogpt ms_per_iter" not in bench.summary(runs[:1])
    table = bench.table(runs)
    assert table.splitlines()[2] == "| 0 | nanogpt | 100.0 | 50.0 |  | 2.0000 | 1.00 / 2.00 |"
