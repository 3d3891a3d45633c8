r"""Trains an MLP with a hand-derived VJP on a real dataset, driven by optax.

  python -m experiments.train_mlp                          # digits: offline, ~97-98% in seconds
  python -m experiments.train_mlp --dataset=fashion_mnist  # the tuned Fashion-MNIST run
  python -m experiments.train_mlp --dataset=mnist --data_dir=~/data/mnist
  python -m experiments.train_mlp --loss=mse --hidden=50   # lesson 003: mse on the label value
  python -m experiments.train_mlp --overwrite              # discard the run there, train afresh

Each dataset has tuned defaults (`jaxnet.training.config.DEFAULTS`), used for every flag left
unset. The work is `jaxnet.training.job.train_and_evaluate`; this script turns flags into its
`Config`, prints its progress and draws the curves. Writes to --output_dir: metrics.jsonl
(one record per epoch, with the validation split's figures), summary.json (with the test
set's, measured once at the end), curves.png, checkpoint.npz and checkpoint.1.npz (the one
before). Runs on every device (a global batch is split over them), and on several processes
with --coordinator_address, --num_processes and --process_id.

One run per --output_dir: while a run works there, another is refused. The same command run
again resumes an unfinished run, or prints a finished run's summary and exits 0; other flags
on an existing run are refused, naming them (--overwrite replaces the run). A non-finite
training loss stops the run with a non-zero exit status, and no checkpoint is written over;
Ctrl-C or SIGTERM stops after the epoch under way, with a checkpoint.
"""

import math
from pathlib import Path

import jax
from absl import app, flags

import jaxnet
from experiments import common
from jaxnet.training import config, data, job, loop, parallel

_DATASET = flags.DEFINE_enum("dataset", "digits", data.DATASETS, "Which data to train on.")
_DATA_DIR = common.define_path("data_dir", None, "Folder looked in first for the data files.")
_DOWNLOAD = flags.DEFINE_boolean("download", True, "Download MNIST/Fashion-MNIST if absent.")
_HIDDEN = flags.DEFINE_list("hidden", None, "Hidden layer widths, e.g. 256,128.")
_LOSS = flags.DEFINE_enum(
    "loss", None, ["cross_entropy", "mse"],
    "cross_entropy on the logits, or lesson 003's mse on the label value (one output).",
)  # fmt: skip
_AUGMENT = flags.DEFINE_enum(
    "augment", None, ["none", "flip"], "flip: mirror a random half of each batch (clothes)."
)
_LABEL_SMOOTHING = flags.DEFINE_float(
    "label_smoothing", None, "cross_entropy only: put this much of the target evenly on "
    "every class, in [0, 1).",
)  # fmt: skip
_GRAD = flags.DEFINE_enum("grad", "fused", list(jaxnet.network.GRADS), "Which gradient.")
_INIT = flags.DEFINE_enum("init", None, sorted(jaxnet.initializers.INITIALIZERS), "Weight init.")
_OPTIMIZER = flags.DEFINE_string(
    "optimizer", None, f"The optax optimizer, one of: {', '.join(loop.OPTIMIZERS)}."
)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Peak step size.", lower_bound=0.0)
_SCHEDULE = flags.DEFINE_enum(
    "schedule", None, list(loop.SCHEDULES), "Learning-rate schedule over the whole run."
)
_CLIP_GRAD_NORM = flags.DEFINE_float(
    "clip_grad_norm", None, "Scale each gradient down to at most this global norm; 0: no "
    "clipping.", lower_bound=0.0,
)  # fmt: skip
_ACTIVATION = flags.DEFINE_enum(
    "activation", None, list(config.ACTIVATIONS), "After each hidden layer. leaky_relu: "
    "slope 0.01; general_relu: fast.ai's leak 0.1, sub 0.4.",
)  # fmt: skip
_NORM = flags.DEFINE_enum(
    "norm", None, list(config.NORMS), "Normalization after each hidden dense layer, before "
    "its activation: batch_norm (over the global batch) or layer_norm.",
)  # fmt: skip
_DROPOUT = flags.DEFINE_float(
    "dropout", None, "Dropout rate after each hidden activation, in [0, 1).", lower_bound=0.0
)
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", None, "Decoupled weight decay where the optimizer takes one (adamw, lion, "
    "lamb), else L2 added to the gradient.", lower_bound=0.0,
)  # fmt: skip
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch size.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs to train.", lower_bound=1)
_VALIDATION = flags.DEFINE_float(
    "validation_fraction", None, "Hold out this fraction of the training set (the same "
    "examples whatever --seed) and report loss and accuracy on it each epoch; the test set is "
    "measured once, at the end. Default: the dataset's (digits 0.1, MNIST and Fashion-MNIST "
    "5000 images, synthetic 0).", lower_bound=0.0, upper_bound=0.5,
)  # fmt: skip
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed for init and shuffling.", lower_bound=0)
_OUTPUT_DIR = common.define_path(
    "output_dir", "runs/train_mlp", "Where outputs go; one run per folder, locked while it "
    "works there. Run the same command again to resume an unfinished run or show a finished "
    "one.",
)  # fmt: skip
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 1, "Write a checkpoint every N epochs (and at the end); 0: only at "
    "the end.", lower_bound=0,
)  # fmt: skip
_RESUME = flags.DEFINE_boolean(
    "resume", False, "Continue from --output_dir's checkpoint (as a plain re-run does), or "
    "show the finished run's summary; without a checkpoint, start afresh.",
)  # fmt: skip
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Discard the run in --output_dir (its summary, metrics, checkpoints "
    "and curves; nothing else there) once the gradient check passes, and train afresh.",
)  # fmt: skip
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_epoch", 0, "Stop after this epoch's checkpoint, as if the run were "
    "interrupted (to try resuming); 0: never.", lower_bound=0,
)  # fmt: skip
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a run over several processes."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in the run.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.", lower_bound=0)
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 60, "Seconds to wait for the coordinator.", lower_bound=1
)

# Flags whose default comes from the dataset (config.DEFAULTS) unless given.
_FLAGS = {"hidden": _HIDDEN, "loss": _LOSS, "init": _INIT, "optimizer": _OPTIMIZER,
          "learning_rate": _LEARNING_RATE, "schedule": _SCHEDULE, "weight_decay": _WEIGHT_DECAY,
          "batch_size": _BATCH_SIZE, "epochs": _EPOCHS, "augment": _AUGMENT,
          "label_smoothing": _LABEL_SMOOTHING, "clip_grad_norm": _CLIP_GRAD_NORM,
          "activation": _ACTIVATION, "norm": _NORM, "dropout": _DROPOUT,
          "validation_fraction": _VALIDATION}  # fmt: skip


def _positive_widths(widths):
    try:
        return widths is None or all(int(w) > 0 for w in widths)
    except ValueError:
        return False


def _known_optimizer(name):
    try:
        return name is None or bool(loop.make_optimizer(name, 1e-3))
    except ValueError as e:  # names the nearest optax optimizers
        raise flags.ValidationError(str(e)) from None


flags.register_validator("hidden", _positive_widths, "--hidden must list positive integers.")
flags.register_validator("optimizer", _known_optimizer)
flags.register_validator(
    "output_dir", bool, "--output_dir must name a folder; '' would write into the current one."
)


def config_from_flags() -> job.Config:
    """The run's settings: flags given on the command line, else the dataset's defaults."""
    given = {k: f.value for k, f in _FLAGS.items() if f.present}
    if "hidden" in given:  # a list of strings, each an int (the validator checked)
        given["hidden"] = tuple(int(w) for w in given["hidden"])
    return job.Config.for_dataset(
        _DATASET.value, **given, grad=_GRAD.value, seed=_SEED.value, data_dir=_DATA_DIR.value,
        download=_DOWNLOAD.value, checkpoint_every=_CHECKPOINT_EVERY.value,
        resume=_RESUME.value, stop_after_epoch=_STOP_AFTER.value,
    )  # fmt: skip


def say(line: str) -> None:
    """Prints on process 0 only: one progress log for a run over several processes."""
    if jax.process_index() == 0:
        print(line, flush=True)


def plot_curves(workdir: str | Path) -> Path | None:
    """Draws metrics.jsonl's losses and accuracies per epoch into curves.png; its path, or
    None when there are no records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = job.read_metrics(Path(workdir))
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "valid_loss", "test_loss"):
        if key in records[0]:
            left.plot(epochs, [float(r[key]) for r in records], label=key)
    for key in ("valid_accuracy", "test_accuracy"):
        if key in records[0] and math.isfinite(records[0][key]):  # NaN: a regression
            right.plot(epochs, [float(r[key]) for r in records], label=key)
    left.set(xlabel="epoch", ylabel="loss", yscale="log")
    right.set(xlabel="epoch", ylabel="accuracy")
    for panel in (left, right):
        if panel.lines:
            panel.legend()
    fig.tight_layout()
    return Path(common.save_png(fig, Path(workdir) / "curves.png"))


def main(argv):
    del argv
    common.quiet_jax_logs()

    def job_run():
        if _COORDINATOR.value or _NUM_PROCESSES.value > 1:
            parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                timeout_seconds=_TIMEOUT.value)  # fmt: skip
        return job.train_and_evaluate(config_from_flags(), _OUTPUT_DIR.value, log=say,
                                      overwrite=_OVERWRITE.value)  # fmt: skip

    summary = common.run_or_exit("train_mlp", job_run, _OUTPUT_DIR.value, job.Interrupted)
    if summary is not None and jax.process_index() == 0:
        plot_curves(_OUTPUT_DIR.value)
        say(job.summary_line(summary, _OUTPUT_DIR.value))


if __name__ == "__main__":
    app.run(main)
