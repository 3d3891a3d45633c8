r"""nanoGPT's character-level GPT on jaxnet's text, timed, and a jaxnet run beside it.

Writes nanoGPT's data/<text>_char/ (train.bin, val.bin, meta.pkl) from jaxnet.text.load, runs
nanoGPT's train.py on CPU with the torch interpreter given, and, with --jaxnet_command, a
jaxnet command right after it, back to back (the order alternating each of --rounds).
Prints a table and writes the JSON to --output. See benchmarks/README.md for the setup.

  python -m benchmarks.nanogpt --nanogpt_dir=/work/nanoGPT \
      --python=/work/torch-venv/bin/python --max_iters=20 --output=/tmp/nanogpt.json
  python -m benchmarks.nanogpt --nanogpt_dir=/work/nanoGPT \
      --python=/work/torch-venv/bin/python --rounds=3 \
      --jaxnet_command='python -m experiments.gpt --max_iters={max_iters} --text={text}'
"""

import os
import platform
import shlex
import sys
import time
from pathlib import Path

from absl import app, flags

from benchmarks import nanogpt_bench as bench
from jaxnet import text
from jaxnet.training import files

_NANOGPT_DIR = flags.DEFINE_string("nanogpt_dir", None, "A checkout of karpathy/nanoGPT.")
_PYTHON = flags.DEFINE_string("python", None, "The Python interpreter that has torch.")
_TEXT = flags.DEFINE_string("text", "fortunes", "A corpus name or a UTF-8 file (jaxnet.text).")
_MAX_ITERS = flags.DEFINE_integer("max_iters", 2000, "Training steps.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/nanogpt.json", "The JSON written.")
_JAXNET_COMMAND = flags.DEFINE_string(
    "jaxnet_command", "", "A jaxnet command run after nanoGPT, e.g. 'python -m experiments.gpt'. "
    "{max_iters} and {text} are filled in; --output_dir=<a temporary folder> is appended unless "
    "it names {output_dir}; it must write results.json with val_loss, seconds, ms_per_iter."
)  # fmt: skip
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Runs of each side; the order alternates.",
                               lower_bound=1)  # fmt: skip
_ECHO = flags.DEFINE_bool("echo", True, "Print each run's output as it comes.")


def _run(side: str, dataset: str) -> dict:
    echo = print if _ECHO.value else None
    if side == "nanogpt":
        return bench.run_nanogpt(_NANOGPT_DIR.value, _PYTHON.value, dataset, _MAX_ITERS.value,
                                 echo)  # fmt: skip
    return bench.run_jaxnet(_JAXNET_COMMAND.value, echo, max_iters=_MAX_ITERS.value,
                            text=_TEXT.value)  # fmt: skip


def main(argv):
    del argv
    if not (Path(_NANOGPT_DIR.value) / "train.py").is_file():
        raise app.UsageError(
            f"--nanogpt_dir={_NANOGPT_DIR.value} holds no train.py; pass a checkout of "
            "karpathy/nanoGPT (see benchmarks/README.md)."
        )
    corpus = text.load(_TEXT.value)
    dataset = bench.dataset_name(corpus.name)
    bench.write_nanogpt_data(corpus, Path(_NANOGPT_DIR.value) / "data" / dataset)
    results = {
        "command": shlex.join(["python", "-m", "benchmarks.nanogpt", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        **bench.torch_info(_PYTHON.value),
        "corpus": {"text": corpus.name, "vocab_size": corpus.vocab_size,
                   "train_chars": len(corpus.train), "val_chars": len(corpus.val)},
        "runs": [],
    }  # fmt: skip
    sides = bench.SIDES if _JAXNET_COMMAND.value else bench.SIDES[:1]
    for round_, side in bench.rounds_order(_ROUNDS.value, sides):
        results["runs"].append({"round": round_, **_run(side, dataset)})
        results["summary"] = bench.summary(results["runs"])
        files.write_json_atomic(_OUTPUT.value, results)  # after every run: a partial record
    print(bench.table(results["runs"]))
    for key, value in results["summary"].items():
        print(f"{key}: {value}")
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["nanogpt_dir", "python"])
    app.run(main)
