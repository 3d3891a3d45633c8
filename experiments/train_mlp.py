r"""Trains an MLP with a hand-derived VJP on a real dataset, driven by optax.

  python -m experiments.train_mlp                          # digits: offline, ~97-98% in seconds
  python -m experiments.train_mlp --dataset=fashion_mnist  # the tuned Fashion-MNIST run
  python -m experiments.train_mlp --dataset=mnist --data_dir=~/data/mnist
  python -m experiments.train_mlp --loss=mse --hidden=50   # lesson 003: mse on the label value
  python -m experiments.train_mlp --resume                 # go on from the last checkpoint

Each dataset has tuned defaults (`DEFAULTS`), used for every flag left unset. Writes to
--output_dir: metrics.jsonl (one record per epoch), summary.json, curves.png and
checkpoint.npz. Runs on every device (a global batch is split over them), and on several
processes with --coordinator_address, --num_processes and --process_id.
"""

import functools
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

import jaxnet
from experiments import common
from jaxnet import checkpoint, data, gradcheck, io, parallel, train

_DATASET = flags.DEFINE_enum("dataset", "digits", data.DATASETS, "Which data to train on.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder looked in first for the data files.")
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
_GRAD = flags.DEFINE_enum("grad", "fused", list(jaxnet.checks.GRADS), "Which gradient.")
_INIT = flags.DEFINE_enum("init", None, sorted(jaxnet.initializers.INITIALIZERS), "Weight init.")
_OPTIMIZER = flags.DEFINE_string("optimizer", None, "Any optax optimizer by name, e.g. adam.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Peak step size.", lower_bound=0.0)
_SCHEDULE = flags.DEFINE_enum(
    "schedule", None, list(train.SCHEDULES), "Learning-rate schedule over the whole run."
)
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", None, "Decoupled weight decay where the optimizer takes one (adamw, lion, "
    "lamb), else L2 added to the gradient.", lower_bound=0.0,
)  # fmt: skip
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global batch size.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs to train.", lower_bound=1)
_VALIDATION = flags.DEFINE_float(
    "validation_fraction", 0.0, "Hold out this fraction of the training set and report "
    "accuracy on it each epoch.", lower_bound=0.0, upper_bound=0.5,
)  # fmt: skip
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed for init and shuffling.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/train_mlp", "Where outputs go.")
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 1, "Write a checkpoint every N epochs (and at the end); 0: only at "
    "the end.", lower_bound=0,
)  # fmt: skip
_RESUME = flags.DEFINE_boolean("resume", False, "Continue from --output_dir's checkpoint.")
_STOP_AFTER = flags.DEFINE_integer(
    "stop_after_epoch", 0, "Stop after this epoch's checkpoint, as if the run were "
    "interrupted (to try --resume); 0: never.", lower_bound=0,
)  # fmt: skip
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a run over several processes."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in the run.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.", lower_bound=0)
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 60, "Seconds to wait for the coordinator.", lower_bound=1
)

# The best settings we know for each dataset; a flag given on the command line wins.
DEFAULTS = {
    "digits": dict(hidden=[256], loss="cross_entropy", init="kaiming_normal", optimizer="adam",
                   learning_rate=3e-3, schedule="cosine", weight_decay=0.0, batch_size=64,
                   epochs=30, augment="none", label_smoothing=0.0),
    "mnist": dict(hidden=[1024, 1024], loss="cross_entropy", init="kaiming_normal",
                  optimizer="adamw", learning_rate=1e-3, schedule="cosine", weight_decay=1e-4,
                  batch_size=256, epochs=12, augment="none", label_smoothing=0.0),
    "fashion_mnist": dict(hidden=[512, 512], loss="cross_entropy", init="kaiming_normal",
                          optimizer="adamw", learning_rate=1e-3, schedule="cosine",
                          weight_decay=0.05, batch_size=128, epochs=24, augment="flip",
                          label_smoothing=0.1),
    "synthetic": dict(hidden=[100], loss="mse", init="torch_default", optimizer="adam",
                      learning_rate=1e-3, schedule="constant", weight_decay=0.0, batch_size=64,
                      epochs=500, augment="none", label_smoothing=0.0),
}  # fmt: skip
_FLAGS = {"hidden": _HIDDEN, "loss": _LOSS, "init": _INIT, "optimizer": _OPTIMIZER,
          "learning_rate": _LEARNING_RATE, "schedule": _SCHEDULE, "weight_decay": _WEIGHT_DECAY,
          "batch_size": _BATCH_SIZE, "epochs": _EPOCHS, "augment": _AUGMENT,
          "label_smoothing": _LABEL_SMOOTHING}  # fmt: skip


def _positive_widths(widths):
    try:
        return widths is None or all(int(w) > 0 for w in widths)
    except ValueError:
        return False


def _known_optimizer(name):
    try:
        return name is None or bool(train.make_optimizer(name, 1e-3))
    except ValueError as e:  # names the nearest optax optimizers
        raise flags.ValidationError(str(e)) from None


flags.register_validator("hidden", _positive_widths, "--hidden must list positive integers.")
flags.register_validator("optimizer", _known_optimizer)


def config_from_flags() -> dict:
    """The run's settings: flags given on the command line, else the dataset's defaults."""
    config = dict(DEFAULTS[_DATASET.value])
    config.update({k: f.value for k, f in _FLAGS.items() if f.present})
    config["hidden"] = [int(w) for w in config["hidden"]]
    if config["loss"] != "cross_entropy" and not _LABEL_SMOOTHING.present:
        config["label_smoothing"] = 0.0  # the dataset's default is for cross_entropy
    jaxnet.checks.label_smoothing(config["label_smoothing"], config["loss"])
    config.update(dataset=_DATASET.value, grad=_GRAD.value, seed=_SEED.value,
                  validation_fraction=_VALIDATION.value)  # fmt: skip
    return config


def say(*args) -> None:
    """Prints on process 0 only: one progress log for a run over several processes."""
    if jax.process_index() == 0:
        print(*args, flush=True)


# ------------------------------------------------------------------------------ data


def prepare(config: dict, data_dir: str | None, download: bool) -> dict:
    """Normalised numpy arrays: train (and validation) and test, labels as the loss needs."""
    ds = data.load(config["dataset"], data_dir, download_ok=download)
    if ds.num_classes == 0 and config["loss"] != "mse":
        raise ValueError(f"dataset {ds.name!r} has float targets; use --loss=mse.")
    if config["augment"] == "flip" and ds.x_train.shape[1] != 784:
        raise ValueError(f"--augment=flip mirrors 28x28 images; {ds.name!r} has "
                         f"{ds.x_train.shape[1]} features. Use --augment=none.")  # fmt: skip
    (x, y), (x_valid, y_valid) = data.validation_split(
        ds.x_train, ds.y_train, config["validation_fraction"], seed=config["seed"]
    )
    normalize = data.fit_normalizer(x)
    label_dtype = np.float32 if config["loss"] == "mse" else np.int32
    splits = {"train": (x, y), "valid": (x_valid, y_valid), "test": (ds.x_test, ds.y_test)}
    arrays = {}
    for name, (xs, ys) in splits.items():
        arrays[f"x_{name}"], arrays[f"y_{name}"] = normalize(xs), ys.astype(label_dtype)
    outputs = 1 if config["loss"] == "mse" and ds.num_classes else (ds.num_classes or y.shape[1])
    return dict(arrays=arrays, inputs=x.shape[1], outputs=outputs)


# --------------------------------------------------------------------------- the run


class Run:
    """The jitted epoch and evaluation, state, and the files in the output folder."""

    def __init__(self, config: dict, prepared: dict, mesh, output_dir: Path):
        self.config, self.mesh, self.dir = config, mesh, output_dir
        sizes = [prepared["inputs"], *config["hidden"], prepared["outputs"]]
        a = prepared["arrays"]
        n_train = len(a["x_train"])
        steps = train.batches_per_epoch(n_train, config["batch_size"]) * config["epochs"]
        self.optimizer = train.make_training_optimizer(
            config["optimizer"], config["learning_rate"], config["schedule"], steps,
            config["weight_decay"],
        )  # fmt: skip
        self.loss = functools.partial(jaxnet.mlp_loss, loss=config["loss"], grad=config["grad"],
                                      label_smoothing=config["label_smoothing"])  # fmt: skip
        augment = data.random_flip if config["augment"] == "flip" else None
        self.epoch_fn = train.make_train_epoch(
            self.loss, self.optimizer, config["batch_size"], mesh, augment=augment
        )
        self.evaluate_fn = train.make_evaluate(
            jaxnet.mlp_network(sizes, init=config["init"]), config["loss"], mesh
        )
        init_key, shuffle_key = jax.random.split(jax.random.key(config["seed"]))
        params = jaxnet.init_mlp(init_key, sizes, init=config["init"])
        state = train.init_state(params, self.optimizer, shuffle_key)
        self.state = parallel.put(state, parallel.replicated(mesh))
        self.train_xy = parallel.put((a["x_train"], a["y_train"]), parallel.replicated(mesh))
        self.eval_sets = {
            name: parallel.put(
                train.pad_rows(a[f"x_{name}"], a[f"y_{name}"], mesh.size),
                parallel.sharded_batch(mesh),
            )  # fmt: skip
            for name in ("test", "valid")
            if len(a[f"x_{name}"])
        }
        self.n_train, self.sizes = n_train, sizes
        self.first_batch = (
            a["x_train"][: config["batch_size"]],
            a["y_train"][: config["batch_size"]],
        )

    def gradient_check(self) -> tuple[str, bool]:
        """(one line, ok): the hand VJP against jax.grad of plain jax.numpy on the first batch."""
        x, y = self.first_batch  # on the host: a check needs no mesh
        params = jax.device_get(self.state.params)
        hand = "fused" if self.config["grad"] == "autodiff" else self.config["grad"]
        loss = functools.partial(jaxnet.mlp_loss, loss=self.config["loss"],
                                 label_smoothing=self.config["label_smoothing"])  # fmt: skip

        @jax.jit  # one compile for both; eagerly, each of ~100 small ops compiles on its own
        def both(params, x, y):
            return {g: jax.grad(loss)(params, x, y, grad=g) for g in (hand, "autodiff")}

        grads = both(params, x, y)
        result = gradcheck.compare(grads[hand], grads["autodiff"], rtol=1e-4, atol=1e-6)
        worst_abs = max(leaf.max_abs for leaf in result.leaves)
        worst_rel = max(leaf.max_rel for leaf in result.leaves)
        verdict = "ok" if result.ok else f"MISMATCH in {result.failing()}"
        return (f"gradcheck: {hand} vs autodiff on the first batch of {len(x)}: max abs diff "
                f"{worst_abs:.2e}, max rel diff {worst_rel:.2e}: {verdict}"), result.ok  # fmt: skip

    def epoch(self) -> dict:
        start = time.perf_counter()
        self.state, losses = self.epoch_fn(self.state, *self.train_xy)
        record = {"train_loss": float(np.mean(jax.device_get(losses)))}
        seconds = time.perf_counter() - start
        for name, arrays in self.eval_sets.items():
            loss, accuracy = jax.device_get(self.evaluate_fn(self.state.params, {}, *arrays))
            record[f"{name}_loss"], record[f"{name}_accuracy"] = float(loss), float(accuracy)
        record["samples_per_second"] = self.n_train / seconds
        return record


def _describe(epoch: int, epochs: int, record: dict, devices: int) -> str:
    parts = [f"epoch {epoch:3d}/{epochs}", f"train_loss {record['train_loss']:.4f}"]
    for name in ("valid", "test"):
        if f"{name}_loss" in record:
            parts.append(f"{name}_loss {record[f'{name}_loss']:.4f}")
            if np.isfinite(record[f"{name}_accuracy"]):
                parts.append(f"{name}_acc {100 * record[f'{name}_accuracy']:.2f}%")
    parts.append(f"{record['samples_per_second']:,.0f} samples/s on {devices} device(s)")
    return "  ".join(parts)


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "valid_loss", "test_loss"):
        if key in records[0]:
            left.plot(epochs, [r[key] for r in records], label=key)
    for key in ("valid_accuracy", "test_accuracy"):
        if key in records[0]:
            right.plot(epochs, [r[key] for r in records], label=key)
    left.set(xlabel="epoch", ylabel="loss", yscale="log")
    right.set(xlabel="epoch", ylabel="accuracy")
    left.legend()
    right.legend()
    fig.tight_layout()
    common.write_file(str(path), common.png_bytes(fig))
    plt.close(fig)


def _write_metrics(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(io.finite(r), sort_keys=True) + "\n" for r in records)
    io.write_bytes_atomic(path, text.encode())


def _read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= upto_epoch]


def _start_or_resume(run: Run, resume: bool) -> tuple[int, list[dict], float]:
    """(epochs done, their records, wall seconds spent so far) after restoring if asked."""
    path = run.dir / "checkpoint.npz"
    if not path.is_file():
        if resume:
            say(f"no checkpoint in {run.dir}; starting from scratch")
        return 0, [], 0.0
    if not resume:
        raise ValueError(f"{run.dir} holds a checkpoint from an earlier run; pass --resume to "
                         "continue it, or choose another --output_dir.")  # fmt: skip
    state, meta = checkpoint.restore(path, jax.device_get(run.state))
    changed = sorted(k for k in run.config if meta["config"].get(k) != run.config[k])
    if changed:
        then = {k: meta["config"].get(k) for k in changed}
        now = {k: run.config[k] for k in changed}
        raise ValueError(f"--resume: the checkpoint in {run.dir} was written with {then}, "
                         f"not {now}; resume with the same flags.")  # fmt: skip
    run.state = parallel.put(state, parallel.replicated(run.mesh))
    say(f"resumed from {path} after epoch {meta['epoch']}")
    return meta["epoch"], _read_metrics(run.dir / "metrics.jsonl", meta["epoch"]), meta["wall"]


def train_and_report(config: dict, prepared: dict, mesh, output_dir: Path, *, resume: bool,
                     checkpoint_every: int, stop_after: int) -> dict | None:  # fmt: skip
    """Trains, printing a line per epoch; writes outputs on process 0. Returns the summary."""
    start = time.perf_counter()
    main = jax.process_index() == 0
    run = Run(config, prepared, mesh, output_dir)
    done, records, wall_before = _start_or_resume(run, resume)
    line, ok = run.gradient_check()
    say(line)
    if not ok:
        raise ValueError("the hand-derived gradient disagrees with jax.grad; see the line above.")
    epochs = config["epochs"]
    for epoch in range(done + 1, epochs + 1):
        record = {"epoch": epoch, **run.epoch()}
        records.append(record)
        say(_describe(epoch, epochs, record, mesh.size))
        wall = wall_before + time.perf_counter() - start
        last = epoch == epochs or epoch == stop_after
        if main:
            _write_metrics(output_dir / "metrics.jsonl", records)
            if last or (checkpoint_every and epoch % checkpoint_every == 0):
                meta = {"config": config, "epoch": epoch, "wall": wall}
                checkpoint.save(output_dir / "checkpoint.npz", jax.device_get(run.state), meta)
        if epoch == stop_after and epoch < epochs:
            say(f"stopped after epoch {epoch}; continue with --resume")
            return None
    summary = {
        "dataset": config["dataset"], "test_accuracy": records[-1].get("test_accuracy"),
        "test_loss": records[-1].get("test_loss"), "epochs": epochs,
        "wall_seconds": wall_before + time.perf_counter() - start, "devices": mesh.size,
        "processes": jax.process_count(), "backend": jax.default_backend(), "sizes": run.sizes,
        "config": config, "final": records[-1],
    }  # fmt: skip
    if main:
        io.write_json_atomic(output_dir / "summary.json", summary)
        _plot(records, output_dir / "curves.png")
    return summary


def main(argv):
    del argv
    common.quiet_jax_logs()
    try:
        if _COORDINATOR.value or _NUM_PROCESSES.value > 1:
            parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                timeout_seconds=_TIMEOUT.value)  # fmt: skip
        config = config_from_flags()
        parallel.assert_same_on_all_processes(json.dumps(config, sort_keys=True))
        mesh = parallel.make_mesh()
        parallel.check_batch_size(config["batch_size"], mesh)
        prepared = prepare(config, _DATA_DIR.value, _DOWNLOAD.value)
        summary = train_and_report(
            config, prepared, mesh, Path(_OUTPUT_DIR.value), resume=_RESUME.value,
            checkpoint_every=_CHECKPOINT_EVERY.value, stop_after=_STOP_AFTER.value,
        )  # fmt: skip
    except (ValueError, RuntimeError, OSError) as e:
        sys.exit(f"train_mlp: error: {e}")
    if summary is not None:
        accuracy = summary["test_accuracy"]
        shown = f"{100 * accuracy:.2f}%" if accuracy == accuracy else "n/a (regression)"
        say(f"test accuracy {shown}, test loss {summary['test_loss']:.4f}, "
              f"{summary['wall_seconds']:.1f}s; wrote {_OUTPUT_DIR.value}")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
