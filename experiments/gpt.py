r"""Trains a character-level GPT whose whole backward is written by hand, as nanoGPT does.

  python -m experiments.gpt                            # fortunes (apt-get install fortunes)
  python -m experiments.gpt --text=input.txt           # your own UTF-8 text, e.g. Shakespeare
  python -m experiments.gpt --block_size=1024 --batch_size=4 --max_iters=20
  python -m experiments.gpt --grad=autodiff            # jax.grad of the same layers
  python -m experiments.gpt --compilation_cache=~/.cache/jaxnet-xla   # reruns compile less

The flags are nanoGPT's (train.py with config/train_shakespeare_char.py), and so are the
defaults: the CPU configuration of its README (4 layers, 4 heads, width 128, context 64,
batch 12, 2000 iterations, no dropout). The work is `jaxnet.training.lm.train_gpt`; this
script turns flags into its `GPTConfig` and prints its progress and the samples.

Writes to --output_dir: results.json (train_loss, val_loss, val_loss_full, seconds,
ms_per_iter, tokens_per_second, parameters, samples, the loss history), checkpoint.npz and
checkpoint.1.npz. One run per folder; the same command again resumes a stopped run or prints
a finished run's results (--overwrite trains afresh); Ctrl-C stops after the chunk under
way, with a checkpoint. Runs on every device (the batch is split over them); on a CPU, one
device per core (--cpu_devices).
"""

import time

_STARTED = time.time()  # the whole command's wall time counts from here, imports included

import sys  # noqa: E402

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import common  # noqa: E402
from jaxnet.training import lm, parallel  # noqa: E402

_D = lm.GPTConfig()
_TEXT = common.define_path("text", _D.text, "A corpus name (fortunes) or a UTF-8 file's path.")
_N_LAYER = flags.DEFINE_integer("n_layer", _D.n_layer, "Transformer blocks.")
_N_HEAD = flags.DEFINE_integer("n_head", _D.n_head, "Attention heads.")
_N_EMBD = flags.DEFINE_integer("n_embd", _D.n_embd, "Model width, a multiple of n_head.")
_BLOCK_SIZE = flags.DEFINE_integer("block_size", _D.block_size, "Context length.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _D.batch_size, "Sequences per step.")
_MAX_ITERS = flags.DEFINE_integer("max_iters", _D.max_iters, "Optimizer steps.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", _D.learning_rate, "Peak learning rate.")
_MIN_LR = flags.DEFINE_float("min_lr", _D.min_lr, "The learning rate after the decay.")
_WARMUP_ITERS = flags.DEFINE_integer("warmup_iters", _D.warmup_iters, "Linear warmup steps.")
_LR_DECAY_ITERS = flags.DEFINE_integer(
    "lr_decay_iters", _D.lr_decay_iters, "The cosine decay ends here."
)
_DECAY_LR = flags.DEFINE_boolean("decay_lr", _D.decay_lr, "Warmup and cosine decay; or constant.")
_BETA1 = flags.DEFINE_float("beta1", _D.beta1, "AdamW's beta1.")
_BETA2 = flags.DEFINE_float("beta2", _D.beta2, "AdamW's beta2.")
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", _D.weight_decay, "AdamW's decoupled decay, on the 2-D weights only."
)
_GRAD_CLIP = flags.DEFINE_float("grad_clip", _D.grad_clip, "Clip the global norm; 0: off.")
_DROPOUT = flags.DEFINE_float("dropout", _D.dropout, "Drop rate, in [0, 1).")
_BIAS = flags.DEFINE_boolean("bias", _D.bias, "Biases in the dense layers and layer norms.")
_EVAL_INTERVAL = flags.DEFINE_integer(
    "eval_interval", _D.eval_interval, "Estimate the losses (and checkpoint) every N iterations."
)
_EVAL_ITERS = flags.DEFINE_integer(
    "eval_iters", _D.eval_iters, "Random batches per split in each loss estimate."
)
_LOG_INTERVAL = flags.DEFINE_integer(
    "log_interval",
    _D.log_interval,
    "Iterations per jitted chunk and per progress line; 0: "
    "about 38,400 tokens (50 iterations at the defaults, 9 at --batch_size=4 "
    "--block_size=1024).",
)
_SEED = flags.DEFINE_integer("seed", _D.seed, "PRNG seed for init, batches and samples.")
_GRAD = flags.DEFINE_enum(
    "grad", _D.grad, list(lm.GRADS),
    "fused: the whole VJP one custom_vjp; ops: each layer its own; autodiff: jax.grad.",
)  # fmt: skip
_SAMPLE_CHARS = flags.DEFINE_integer(
    "sample_chars", _D.sample_chars, "Characters to generate at the end; 0: none."
)
_TEMPERATURE = flags.DEFINE_float("temperature", _D.temperature, "Sampling temperature, > 0.")
_OUTPUT_DIR = common.define_path(
    "output_dir", "runs/gpt", "Where outputs go; one run per folder. The same command again "
    "resumes a stopped run or shows a finished one.",
)  # fmt: skip
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0, "On a CPU: split it into this many devices, the batch split over them "
    "(jaxnet.training.parallel.split_cpu); 0: one per core, as many as divide --batch_size; "
    "1: one device, XLA's threads alone.", lower_bound=0,
)  # fmt: skip
_COMPILATION_CACHE = common.define_path(
    "compilation_cache", "", "A folder for JAX's persistent compilation cache: a later command "
    "with the same settings loads its programs from there instead of compiling them (about "
    "3 to 5 s less at the defaults on 2 cores); '' (the default): compile afresh each time.",
)  # fmt: skip
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Discard the run there; train afresh.")
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_iter", 0, "Stop after this iteration, with a checkpoint (to try resuming); "
    "0: never.",
)  # fmt: skip

_CONFIG_FLAGS = (_TEXT, _N_LAYER, _N_HEAD, _N_EMBD, _BLOCK_SIZE, _BATCH_SIZE, _MAX_ITERS,
                 _LEARNING_RATE, _MIN_LR, _WARMUP_ITERS, _LR_DECAY_ITERS, _DECAY_LR, _BETA1,
                 _BETA2, _WEIGHT_DECAY, _GRAD_CLIP, _DROPOUT, _BIAS, _EVAL_INTERVAL,
                 _EVAL_ITERS, _LOG_INTERVAL, _SEED, _GRAD, _SAMPLE_CHARS, _TEMPERATURE,
                 _STOP_AFTER)  # fmt: skip


def config_from_flags() -> lm.GPTConfig:
    """The run's settings from the flags (GPTConfig validates them all together)."""
    return lm.GPTConfig(**{f.name: f.value for f in _CONFIG_FLAGS})


def say(line: str) -> None:
    if jax.process_index() == 0:
        print(line, flush=True)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"gpt: unexpected arguments {argv[1:]}; flags are --name=value.")
    common.quiet_jax_logs()

    def train():
        common.use_compilation_cache(_COMPILATION_CACHE.value)
        config = config_from_flags()
        try:
            parallel.split_cpu(config.batch_size, _CPU_DEVICES.value)
        except ValueError as e:
            raise ValueError(f"--cpu_devices={_CPU_DEVICES.value}: {e}") from None
        return lm.train_gpt(config, _OUTPUT_DIR.value, log=say, overwrite=_OVERWRITE.value,
                            started=_STARTED)  # fmt: skip

    results = common.run_or_exit("gpt", train, _OUTPUT_DIR.value, lm.Interrupted)
    if results is not None:
        say(f"samples:\n{results['samples']}\n")
        say(f"val loss {results['val_loss']:.4f} (whole split {results['val_loss_full']:.4f}), "
            f"train loss {results['train_loss']:.4f}, {results['ms_per_iter']:.1f} ms/iter, "
            f"{results['seconds']:.1f}s; results in {_OUTPUT_DIR.value}/{lm.RESULTS}")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
