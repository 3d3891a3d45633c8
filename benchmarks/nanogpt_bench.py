"""nanoGPT's character-level GPT on the same text as jaxnet's: the data, the run, the log.

nanoGPT (github.com/karpathy/nanoGPT) trains on `data/<dataset>/train.bin` and `val.bin`
(uint16 ids) with `meta.pkl` ({"vocab_size", "itos", "stoi"}), which its
`data/shakespeare_char/prepare.py` writes. `write_nanogpt_data` writes them from
`jaxnet.text.load`, so both sides train and evaluate on identical ids. `run_nanogpt` runs its
`train.py` on CPU as a subprocess with the torch interpreter given, timed with
time.perf_counter around the whole subprocess, and `parse_log` reads its output:

  step N: train loss X, val loss Y              every eval_interval steps (200 batches each)
  iter N: loss X, time Tms, mfu M%              every log_interval steps

nanoGPT trains max_iters + 1 steps (0 to max_iters inclusive) and evaluates before the step
of each multiple of eval_interval, so the last "step" line is the loss after max_iters steps.
The time of a step whose number is a multiple of eval_interval includes that evaluation:
`ms_per_iter` is the median over the logged steps without one.

`run_jaxnet` runs a jaxnet command the same way; it must write results.json with val_loss,
seconds and ms_per_iter into its --output_dir. This module holds no flags, so tests import
it; benchmarks/nanogpt.py runs it.
"""

import os
import pickle
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxnet import text
from jaxnet.training import files

UINT16_IDS = 1 << 16
SIDES = ("nanogpt", "jaxnet")
# The run issue 19 fixes, {placeholders} filled in by nanogpt_command: nanoGPT's
# shakespeare_char config made smaller, on CPU, without torch.compile or dropout.
TRAIN_ARGS = (
    "train.py config/train_shakespeare_char.py --dataset={dataset} --device=cpu "
    "--compile=False --eval_iters=200 --eval_interval={eval_interval} "
    "--log_interval={log_interval} --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 "
    "--n_embd=128 --max_iters={max_iters} --lr_decay_iters={max_iters} --dropout=0.0"
)
EVAL_INTERVAL, LOG_INTERVAL = 1000, 100
ROOT = Path(__file__).resolve().parents[1]

_STEP = re.compile(r"^step (\d+): train loss (\S+), val loss (\S+)$")
_ITER = re.compile(r"^iter (\d+): loss (\S+), time (\S+)ms")


# --------------------------------------------------------------------------------- data


def dataset_name(corpus_name: str) -> str:
    """nanoGPT's dataset folder for a corpus: fortunes -> fortunes_char, x/input.txt ->
    input_char (letters, digits and _ only: nanoGPT reads --dataset= as a Python literal)."""
    stem = re.sub(r"\W", "_", Path(corpus_name).stem, flags=re.ASCII) or "text"
    return f"{stem}_char"


def write_nanogpt_data(corpus: text.Corpus, folder: str | os.PathLike) -> Path:
    """Writes train.bin, val.bin (uint16 ids) and meta.pkl into folder, as prepare.py does.

    Raises:
      ValueError: the vocabulary has 65536 characters or more, past uint16.
    """
    if corpus.vocab_size >= UINT16_IDS:
        raise ValueError(
            f"{corpus.name} has {corpus.vocab_size} distinct characters; nanoGPT stores ids "
            f"as uint16, so at most {UINT16_IDS - 1}. Use a text with fewer characters."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        ids = getattr(corpus, split).astype(np.uint16)
        files.write_bytes_atomic(folder / f"{split}.bin", ids.tobytes())
    meta = {
        "vocab_size": corpus.vocab_size,
        "itos": dict(enumerate(corpus.chars)),
        "stoi": {c: i for i, c in enumerate(corpus.chars)},
    }
    files.write_bytes_atomic(folder / "meta.pkl", pickle.dumps(meta))
    return folder


# ---------------------------------------------------------------------------------- log


def intervals(max_iters: int) -> tuple[int, int]:
    """(eval_interval, log_interval): 1000 and 100, shrunk so that a run shorter than 2000
    steps still ends on an evaluation and logs about 20 step times."""
    return min(EVAL_INTERVAL, max_iters), min(LOG_INTERVAL, max(1, max_iters // 20))


def nanogpt_command(python: str, dataset: str, max_iters: int, out_dir: str) -> list[str]:
    """train.py's command line: TRAIN_ARGS, then --out_dir and --wandb_log=False."""
    eval_interval, log_interval = intervals(max_iters)
    args = TRAIN_ARGS.format(dataset=dataset, eval_interval=eval_interval,
                             log_interval=log_interval, max_iters=max_iters)  # fmt: skip
    return [python, *args.split(), f"--out_dir={out_dir}", "--wandb_log=False"]


def parse_log(lines: Sequence[str], eval_interval: int) -> dict:
    """The evaluations and step times in train.py's output.

    Returns:
      {"evals": [[step, train, val], ...], "step_ms": {step: ms}, "train_loss" and "val_loss"
      of the last evaluation, "ms_per_iter": the median step time over steps without one}.

    Raises:
      ValueError: the output holds no "step N: train loss X, val loss Y" line.
    """
    evals, step_ms = [], {}
    for line in lines:
        if m := _STEP.match(line.strip()):
            evals.append([int(m[1]), float(m[2]), float(m[3])])
        elif m := _ITER.match(line.strip()):
            step_ms[int(m[1])] = float(m[3])
    if not evals:
        raise ValueError("train.py printed no 'step N: train loss X, val loss Y' line.")
    timed = [ms for step, ms in step_ms.items() if step % eval_interval] or list(step_ms.values())
    return {
        "evals": evals,
        "step_ms": step_ms,
        "train_loss": evals[-1][1],
        "val_loss": evals[-1][2],
        "ms_per_iter": statistics.median(timed) if timed else None,
    }


# ------------------------------------------------------------------------------ running


def _timed(argv: list[str], cwd, echo: Callable[[str], None] | None, env=None) -> dict:
    """Runs argv, echoing its lines; {output lines, wall_seconds, load averages}."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # fmt: skip
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if echo:
                echo(line.rstrip("\n"))
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"{shlex.join(argv)} failed (exit {proc.returncode}):\n{tail}")
    return {"lines": lines, "wall_seconds": wall, "load_before": load_before,
            "load_after": os.getloadavg()}  # fmt: skip


def torch_info(python: str) -> dict:
    """torch's version and intra-op thread count in the interpreter `python`."""
    code = "import torch; print(torch.__version__, torch.get_num_threads())"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    version, threads = out.stdout.split()
    return {"torch_version": version, "torch_threads": int(threads)}


def run_nanogpt(nanogpt_dir, python: str, dataset: str, max_iters: int, echo=None) -> dict:
    """One timed train.py run on data/<dataset> (written beforehand) in nanogpt_dir."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory(prefix="nanogpt-out-") as out_dir:
        argv = nanogpt_command(python, dataset, max_iters, out_dir)
        run = _timed(argv, nanogpt_dir, echo, env)
    log = parse_log(run.pop("lines"), intervals(max_iters)[0])
    return {"side": "nanogpt", "command": shlex.join(argv), **run, **log}


def jaxnet_argv(command: str, output_dir: str, **values) -> list[str]:
    """command split as a shell would, {output_dir} and each {key} of values filled in;
    --output_dir=... appended when the command names no {output_dir}; a leading `python`
    is this interpreter."""
    argv = shlex.split(command)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    fill = {"output_dir": output_dir, **values}
    if not any("{output_dir}" in arg for arg in argv):
        argv.append("--output_dir={output_dir}")
    for key, value in fill.items():
        argv = [arg.replace("{" + key + "}", str(value)) for arg in argv]
    return argv


def run_jaxnet(command: str, echo=None, **values) -> dict:
    """One timed run of a jaxnet command; its results.json gives val_loss, seconds, ms_per_iter.

    Raises:
      RuntimeError: the command fails or writes no results.json with those keys.
    """
    with tempfile.TemporaryDirectory(prefix="jaxnet-gpt-") as output_dir:
        argv = jaxnet_argv(command, output_dir, **values)
        run = _timed(argv, ROOT, echo)
        results_path = Path(output_dir) / "results.json"
        if not results_path.is_file():
            raise RuntimeError(f"{shlex.join(argv)} wrote no results.json into --output_dir.")
        results = files.parse_json(results_path.read_text())
    missing = [k for k in ("val_loss", "seconds", "ms_per_iter") if k not in results]
    if missing:
        raise RuntimeError(f"{results_path.name} of {shlex.join(argv)} lacks {missing}.")
    run.pop("lines")
    return {"side": "jaxnet", "command": shlex.join(argv), **run, "results": results,
            "val_loss": results["val_loss"], "train_loss": results.get("train_loss"),
            "ms_per_iter": results["ms_per_iter"]}  # fmt: skip


def rounds_order(rounds: int, sides: Sequence[str]) -> list[tuple[int, str]]:
    """(round, side) in run order: the sides in turn, their order reversed every other round."""
    return [(r, s) for r in range(rounds) for s in (sides if r % 2 == 0 else sides[::-1])]


# ------------------------------------------------------------------------------- report


def summary(runs: list[dict]) -> dict:
    """Per side, the medians over rounds; with both sides, the per-round ratios jaxnet /
    nanoGPT of wall time and ms per step, as median with min and max."""
    out = {}
    for side in SIDES:
        mine = [r for r in runs if r["side"] == side]
        if mine:
            out[side] = {k: statistics.median(r[k] for r in mine)
                         for k in ("wall_seconds", "ms_per_iter", "val_loss")}  # fmt: skip
    pairs = {}
    for r in runs:
        pairs.setdefault(r["round"], {})[r["side"]] = r
    both = [p for p in pairs.values() if len(p) == 2]
    for key in ("wall_seconds", "ms_per_iter") if both else ():
        ratios = [p["jaxnet"][key] / p["nanogpt"][key] for p in both]
        out[f"jaxnet/nanogpt {key}"] = {"median": statistics.median(ratios),
                                        "min": min(ratios), "max": max(ratios)}  # fmt: skip
    return out


def _cell(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(runs: list[dict]) -> str:
    """A markdown table: one row per run, in run order."""
    header = ["round", "side", "wall s", "ms/step", "train loss", "val loss", "load before/after"]
    rows = [
        [str(r["round"]), r["side"], f"{r['wall_seconds']:.1f}", _cell(r["ms_per_iter"], ".1f"),
         _cell(r["train_loss"], ".4f"), _cell(r["val_loss"], ".4f"),
         f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}"]
        for r in runs
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
