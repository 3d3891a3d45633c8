"""The main training job as a function: `train_and_evaluate(config, workdir) -> summary`.

The flax examples' shape: a frozen, validated `Config` (`jaxnet.training.config`) in, a summary
out, every file in `workdir`: metrics.jsonl (one record per epoch, with the validation split's
figures), summary.json (with the test set's, measured once at the end), and checkpoint.npz
(the newest) with checkpoint.1.npz (the one before). Progress lines go to `log`; nothing is
printed.

The folder holds one run: it is locked while a run works there (`lock`), and the same
command run again resumes an unfinished run or returns a finished run's summary, while other
flags are refused (`overwrite=True` starts afresh). A non-finite training loss stops the run
(`Diverged`), and SIGINT or SIGTERM stops it after the epoch under way, with a checkpoint
(`Interrupted`).
"""

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import jaxnet
from jaxnet import gradcheck, layers
from jaxnet.training import _signals, checkpoint, data, files, lock, loop, parallel
from jaxnet.training import config as run_config

_CHECKPOINT = "checkpoint.npz"
_KEEP = 2  # checkpoints kept: the newest and the one before
_SPLIT_SEED = 0  # the validation split holds the same examples whatever --seed
Config = run_config.Config  # the run's settings, defined with their defaults in run_config


class Diverged(RuntimeError):
    """The training loss (or gradient norm) became non-finite; `.state` is the last finite."""

    def __init__(self, message: str, state: loop.TrainState):
        super().__init__(message)
        self.state = state


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after an epoch, which was checkpointed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# ------------------------------------------------------------------------------ data


class _Prepared(NamedTuple):
    """Normalised numpy arrays (x_train, y_train, x_valid, ...) and the layer sizes."""

    arrays: dict[str, np.ndarray]
    sizes: list[int]


def prepare(config: Config) -> _Prepared:
    """Loads and normalises the data: train, validation (carved from the training set by a
    fixed shuffle) and test, with labels as the loss needs."""
    ds = data.load(config.dataset, config.data_dir, download_ok=config.download)
    if ds.num_classes == 0 and config.loss != "mse":
        raise ValueError(f"dataset {ds.name!r} has float targets; use --loss=mse.")
    if config.augment == "flip" and ds.x_train.shape[1] != 784:
        raise ValueError(f"--augment=flip mirrors 28x28 images; {ds.name!r} has "
                         f"{ds.x_train.shape[1]} features. Use --augment=none.")  # fmt: skip
    (x, y), (x_valid, y_valid) = data.validation_split(
        ds.x_train, ds.y_train, config.validation_fraction, seed=_SPLIT_SEED
    )
    normalize = data.fit_normalizer(x)
    label_dtype = np.float32 if config.loss == "mse" else np.int32
    splits = {"train": (x, y), "valid": (x_valid, y_valid), "test": (ds.x_test, ds.y_test)}
    arrays = {}
    for name, (xs, ys) in splits.items():
        arrays[f"x_{name}"], arrays[f"y_{name}"] = normalize(xs), ys.astype(label_dtype)
    outputs = 1 if config.loss == "mse" and ds.num_classes else (ds.num_classes or y.shape[1])
    return _Prepared(arrays, [x.shape[1], *config.hidden, outputs])


# --------------------------------------------------------------------------- the job


class _Job(NamedTuple):
    """The network, its jitted epoch and evaluation, and the data placed on the mesh."""

    net: layers.Layer
    objective: Callable  # (params, net_state, x, y, key, grad) -> (loss, new net_state)
    epoch: Callable
    evaluate: Callable
    train_xy: tuple
    eval_sets: dict[str, tuple]
    mesh: Any
    n_train: int


def network(config: Config, sizes: list[int]) -> layers.Layer:
    """The network: each hidden layer dense, then norm, activation and dropout if asked.

    ReLU without normalization or dropout is `jaxnet.mlp_network`, whose params are
    `init_mlp`'s list (the layout of every checkpoint written before layers existed).
    """
    if (config.activation, config.norm, config.dropout) == ("relu", "none", 0.0):
        return jaxnet.mlp_network(sizes, init=config.init)
    norm, hidden = run_config.NORMS[config.norm], []
    bias = config.norm != "batch"  # batch_norm subtracts the batch mean: a bias would cancel
    for width in sizes[1:-1]:
        hidden += [layers.dense(width, bias=bias, init=config.init), *([norm()] if norm else []),
                   run_config.ACTIVATIONS[config.activation](),
                   *([layers.dropout(config.dropout)] if config.dropout else [])]  # fmt: skip
    return layers.serial(*hidden, layers.dense(sizes[-1], init=config.init))


def _objective(config: Config, net: layers.Layer) -> Callable:
    """(params, net_state, x, y, key, grad) -> (loss, new net_state), in train mode."""

    def objective(params, net_state, x, y, key, grad):
        return jaxnet.network_loss(net, params, net_state, x, y, loss=config.loss, grad=grad,
                                   key=key, label_smoothing=config.label_smoothing)  # fmt: skip

    return objective


def _epoch(config: Config, objective: Callable, optimizer, mesh):
    augment = data.random_flip if config.augment == "flip" else None
    loss = lambda p, s, x, y, key: objective(p, s, x, y, key, config.grad)  # noqa: E731
    return loop.make_train_epoch(loss, optimizer, config.batch_size, mesh, augment,
                                  stateful=True)  # fmt: skip


def _optimizer(config: Config, n_train: int):
    steps = loop.batches_per_epoch(n_train, config.batch_size) * config.epochs
    return loop.make_training_optimizer(
        config.optimizer, config.learning_rate, config.schedule, steps, config.weight_decay,
        config.clip_grad_norm,
    )  # fmt: skip


def build(config: Config, prepared: _Prepared, mesh) -> tuple[_Job, loop.TrainState]:
    """The job and its fresh state (on the host), from the config's seed."""
    a = prepared.arrays
    optimizer = _optimizer(config, len(a["x_train"]))
    net = network(config, prepared.sizes)
    objective = _objective(config, net)
    eval_sets = {
        name: parallel.put(loop.pad_rows(a[f"x_{name}"], a[f"y_{name}"], mesh.size),
                           parallel.sharded_batch(mesh))
        for name in ("test", "valid") if len(a[f"x_{name}"])
    }  # fmt: skip
    train_xy = parallel.put((a["x_train"], a["y_train"]), parallel.replicated(mesh))
    job = _Job(net, objective, _epoch(config, objective, optimizer, mesh),
              loop.make_evaluate(net, config.loss, mesh), train_xy, eval_sets, mesh,
              len(a["x_train"]))  # fmt: skip
    init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
    _, params, net_state = layers.init(net, init_key, (1, prepared.sizes[0]))
    return job, jax.device_get(loop.init_state(params, optimizer, shuffle_key, net_state))


def gradient_check(config: Config, job: _Job, state: loop.TrainState, x, y) -> tuple[str, bool]:
    """(one line, ok): the hand VJP against jax.grad of plain jax.numpy on one batch, in
    train mode (batch statistics; one dropout mask for both)."""
    hand = "fused" if config.grad == "autodiff" else config.grad
    key = jax.random.key(0)

    @jax.jit  # one compile for both; eagerly, each of ~100 small ops compiles on its own
    def both(params, net_state, x, y):
        def loss(p, g):
            return job.objective(p, net_state, x, y, key, g)[0]

        return {g: jax.grad(loss)(params, g) for g in (hand, "autodiff")}

    grads = both(state.params, state.net_state, x, y)
    result = gradcheck.compare(grads[hand], grads["autodiff"], rtol=1e-4)  # atol: the dtype's
    worst_abs = max(row.max_abs for row in result.rows)
    worst_rel = max(row.max_rel for row in result.rows)
    verdict = "ok" if result.passed else f"MISMATCH in {result.failing()}"
    return (f"gradcheck: {hand} vs autodiff on the first batch of {len(x)}: max abs diff "
            f"{worst_abs:.2e}, max rel diff {worst_rel:.2e}: {verdict}"), result.passed  # fmt: skip


def _diverged(config, epoch: int, before, after, losses, saved: str) -> Diverged | None:
    bad = loop.first_nonfinite(before, after, losses)
    if bad is None:
        return None
    what = "loss" if not np.isfinite(losses[bad]) else "gradient norm (loss finite)"
    return Diverged(
        f"the training {what} became non-finite ({losses[bad]}) at epoch {epoch}, step "
        f"{bad + 1} of {len(losses)} (update {int(before.step) + bad + 1}); {saved}. Try a "
        f"smaller --learning_rate (now {config.learning_rate:g}) or --clip_grad_norm (e.g. 1.0).",
        jax.device_get(after),
    )  # fmt: skip


def _evaluate(job: _Job, state, name: str) -> dict[str, float]:
    """{name_loss, name_accuracy} of state on a held-out set ("valid" or "test")."""
    loss, accuracy = jax.device_get(job.evaluate(state.params, state.net_state,
                                                 *job.eval_sets[name]))  # fmt: skip
    return {f"{name}_loss": float(loss), f"{name}_accuracy": float(accuracy)}


def _run_epoch(config: Config, job: _Job, state, epoch: int, saved: str):
    """(state, record) after one epoch: train, then evaluate on the validation split.

    Raises:
      Diverged: a training loss or gradient norm became non-finite.
    """
    start = time.perf_counter()
    after, losses = job.epoch(state, *job.train_xy)
    losses = np.asarray(jax.device_get(losses))
    if (error := _diverged(config, epoch, state, after, losses, saved)) is not None:
        raise error
    record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
    seconds = time.perf_counter() - start
    if "valid" in job.eval_sets:
        record.update(_evaluate(job, after, "valid"))
    record["samples_per_second"] = job.n_train / seconds
    return after, record


def _describe(record: dict, epochs: int, devices: int) -> str:
    """One progress line for an epoch's record."""
    parts = [f"epoch {record['epoch']:3d}/{epochs}", f"train_loss {record['train_loss']:.4f}"]
    for name in ("valid", "test"):
        if f"{name}_loss" in record:
            parts.append(f"{name}_loss {record[f'{name}_loss']:.4f}")
            if np.isfinite(record[f"{name}_accuracy"]):
                parts.append(f"{name}_acc {100 * record[f'{name}_accuracy']:.2f}%")
    parts.append(f"{record['samples_per_second']:,.0f} samples/s on {devices} device(s)")
    return "  ".join(parts)


# ------------------------------------------------------------- the output folder

_SUMMARY, _METRICS, _CURVES = "summary.json", "metrics.jsonl", "curves.png"
_AFRESH = "pass --overwrite to start afresh, or choose another --output_dir"


def read_metrics(workdir: Path, upto_epoch: int | None = None) -> list[dict]:
    """The records of metrics.jsonl, up to an epoch; [] if there is none."""
    path = Path(workdir) / _METRICS
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = [files.parse_json(line) for line in lines if line.strip()]
    return [r for r in records if upto_epoch is None or r["epoch"] <= upto_epoch]


def _write_metrics(workdir: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(files.finite(r), sort_keys=True) + "\n" for r in records)
    files.write_bytes_atomic(workdir / _METRICS, text.encode())


def _check_same_config(config: Config, then: dict, used: Path) -> None:
    """Refuses a run whose recorded flags differ from config's, naming each difference."""
    run_config.check_same(config.recorded(), then, Config().recorded(), used)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(config: Config, meta, path: Path) -> None:
    """Refuses a checkpoint whose record this run cannot go on from, naming the file."""
    fix = f"delete it to resume from the checkpoint before it, {_AFRESH}"
    then = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(then, dict):
        raise checkpoint.CheckpointError(f"{path}: its record holds no run settings "
                                         f"('config'); it is not train_mlp's. {fix}.")  # fmt: skip
    _check_same_config(config, then, path)
    epoch, wall = meta.get("epoch"), meta.get("wall", 0.0)
    if not (_is_count(epoch) and 1 <= epoch <= config.epochs):
        raise checkpoint.CheckpointError(f"{path}: its record says epoch {epoch!r}, not one "
                                         f"of this run's 1..{config.epochs}; {fix}.")  # fmt: skip
    if not (isinstance(wall, (int, float)) and not isinstance(wall, bool) and wall >= 0):
        raise checkpoint.CheckpointError(f"{path}: its record says wall {wall!r}, not a "
                                         f"number of seconds; {fix}.")  # fmt: skip


def _newest_meta(workdir: Path) -> tuple[dict, Path] | None:
    """(record, file) of the newest readable checkpoint, as `restore_newest` would pick it."""
    for path in checkpoint.rotated_paths(workdir / _CHECKPOINT, _KEEP):
        if path.is_file():
            try:
                return checkpoint.read_meta(path), path
            except checkpoint.CheckpointError:
                continue
    return None


def _finished(config: Config, workdir: Path) -> dict | None:
    """The summary of the run in workdir if it finished (a summary and a checkpoint of its
    last epoch) with config's flags, else None.

    Raises:
      ValueError: the run in workdir has other flags, or its newest checkpoint's record is
        not one this run can go on from.
    """
    summary = files.read_run_record(workdir / _SUMMARY)
    if summary is not None:
        _check_same_config(config, summary["config"], workdir / _SUMMARY)
    newest = _newest_meta(workdir)
    if newest is not None:
        _check_meta(config, *newest)
    done = newest[0]["epoch"] if newest else 0
    return summary if done == config.epochs else None


def _restore(config: Config, workdir: Path, template, log) -> tuple[Any, int, float]:
    """(state or None, epochs done, wall seconds so far) from the newest readable checkpoint."""

    def check(meta: dict, used: Path) -> None:
        _check_meta(config, meta, used)

    state, meta, used = checkpoint.restore_run(workdir / _CHECKPOINT, template, _KEEP, check, log)
    if state is None:
        if config.resume:
            log(f"no checkpoint in {workdir}; starting from scratch")
        return None, 0, 0.0
    log(f"resumed from {used} after epoch {meta['epoch']}")
    return state, meta["epoch"], meta.get("wall", 0.0)


def _discard_old_run(workdir: Path, log) -> None:
    """--overwrite: removes the earlier run's files, the summary (which marks it done) first."""
    old = [workdir / _SUMMARY, *checkpoint.rotated_paths(workdir / _CHECKPOINT, _KEEP),
           workdir / _METRICS, workdir / _CURVES]  # fmt: skip
    removed = [path.name for path in old if path.is_file()]
    for path in old:
        path.unlink(missing_ok=True)
    if removed:
        log(f"--overwrite: removed the earlier run's {', '.join(removed)} from {workdir}")


# --------------------------------------------------------------------------- the run


def _summary(config: Config, job: _Job, sizes, records: list[dict], tested: dict, wall: float):
    final = records[-1]
    return {
        "dataset": config.dataset, "test_accuracy": tested["test_accuracy"],
        "test_loss": tested["test_loss"], "valid_accuracy": final.get("valid_accuracy"),
        "valid_loss": final.get("valid_loss"), "epochs": config.epochs, "wall_seconds": wall,
        "devices": job.mesh.size, "processes": jax.process_count(),
        "backend": jax.default_backend(), "sizes": sizes, "config": config.recorded(),
        "final": final,
    }  # fmt: skip


def _silent(line: str) -> None:
    del line


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    log: Callable[[str], None] = _silent,
    overwrite: bool = False,
) -> dict | None:
    """Trains and evaluates an MLP as `config` says, in workdir; or shows the run there.

    A workdir holding an unfinished run with the same flags resumes it; one holding a
    finished run returns that run's summary without training. The folder is locked for
    the run: a second run there is refused.

    Args:
      config: the run's settings.
      workdir: the output folder (only process 0 writes).
      log: receives each progress line (gradient check, one line per epoch, resume).
      overwrite: discard the run in workdir (its summary, checkpoints and metrics, and
        nothing else) once the gradient check passes, and train afresh.

    Returns:
      The summary also written to summary.json, or None if config.stop_after_epoch
      stopped the run first.

    Raises:
      ValueError: bad data or settings or output folder, or a run in workdir made with
        other flags.
      lock.FolderLocked: another run holds workdir.
      checkpoint.CheckpointError: no checkpoint in workdir is readable, or the newest holds
        a record or values that no run of config's writes.
      Diverged: a training loss became non-finite; no checkpoint is written over.
      Interrupted: SIGINT or SIGTERM; the last finished epoch was checkpointed.
    """
    if not str(workdir).strip():  # Path("") is ".": it would write into the current folder
        raise ValueError("workdir is empty; name the output folder, e.g. 'runs/train_mlp'.")
    start, workdir = time.perf_counter(), Path(workdir)
    parallel.assert_same_on_all_processes(json.dumps(config.recorded(), sort_keys=True))
    if overwrite and config.resume:
        raise ValueError("--overwrite discards the run that --resume continues; pass one.")
    with lock.claim(workdir, [_CHECKPOINT, _METRICS, _SUMMARY, _CURVES]) as held:
        summary = None if overwrite else _finished(config, workdir)
        if summary is not None:
            log(f"{workdir}: already trained; --overwrite to train again")
            return summary
        return _train(config, workdir, log, overwrite, held, start)


def _train(config: Config, workdir: Path, log, overwrite: bool, held, start: float):
    """train_and_evaluate's work, holding the folder."""
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    prepared = prepare(config)
    job, fresh = build(config, prepared, mesh)
    restored, done, wall_before = (None, 0, 0.0) if overwrite else _restore(
        config, workdir, fresh, log)  # fmt: skip
    state = fresh if restored is None else restored
    _check_gradients(config, job, state, prepared.arrays, log)
    if overwrite and jax.process_index() == 0:
        _discard_old_run(workdir, log)
    state = parallel.put(state, parallel.replicated(mesh))
    records = read_metrics(workdir, done) if done else []
    # From here a signal waits for the epoch under way (before, there is nothing to save).
    with _signals.deferred_stop_signals() as received:
        runner = _Loop(config, job, workdir, log, received, done, held)
        ended = runner.run(state, records, lambda: wall_before + time.perf_counter() - start)
    if ended is None:
        return None
    state, records = ended
    summary = _summary(config, job, prepared.sizes, records, _evaluate(job, state, "test"),
                       wall_before + time.perf_counter() - start)  # fmt: skip
    if jax.process_index() == 0:
        held.verify()
        files.write_json_atomic(workdir / _SUMMARY, summary)
    return summary


def _check_gradients(config: Config, job: _Job, state, arrays: dict, log) -> None:
    first = slice(0, config.batch_size)
    x, y = arrays["x_train"][first], arrays["y_train"][first]
    line, ok = gradient_check(config, job, state, x, y)
    log(line)
    if not ok:
        raise ValueError("the hand-derived gradient disagrees with jax.grad; see the line above.")


class _Loop(NamedTuple):
    config: Config
    job: _Job
    workdir: Path
    log: Callable[[str], None]
    received: list[int]
    done: int
    held: lock.Lock | None  # process 0's lock on workdir

    def save(self, state, epoch: int, wall: float) -> None:
        if jax.process_index() == 0:
            meta = {"config": self.config.recorded(), "epoch": epoch, "wall": wall}
            checkpoint.save(self.workdir / _CHECKPOINT, state, meta, keep=_KEEP)

    def run(self, state, records: list[dict], wall: Callable[[], float]):
        """Trains the remaining epochs; (state, records), or None if stopped on purpose."""
        config, main = self.config, jax.process_index() == 0
        saved = self.done
        for epoch in range(self.done + 1, config.epochs + 1):
            where = (f"{self.workdir / _CHECKPOINT}, of epoch {saved}, is kept" if saved
                     else "no checkpoint was written")  # fmt: skip
            state, record = _run_epoch(config, self.job, state, epoch, where)
            records.append(record)
            self.log(_describe(record, config.epochs, self.job.mesh.size))
            if main:
                self.held.verify()  # never write over another run's files
                _write_metrics(self.workdir, records)
            every = config.checkpoint_every and epoch % config.checkpoint_every == 0
            stop = epoch == config.stop_after_epoch
            signum = _signals.stop_requested(self.received)
            if every or stop or signum or epoch == config.epochs:
                self.save(state, epoch, wall())
                saved = epoch
            if signum and epoch < config.epochs:
                after, saved = f"epoch {epoch} of {config.epochs}", self.workdir / _CHECKPOINT
                raise Interrupted(_signals.stopped(signum, after, saved), signum)
            if stop and epoch < config.epochs:
                self.log(f"stopped after epoch {epoch}; run the same command again to continue")
                return None
        return state, records


def _percent(value) -> str:
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return f"{100 * value:.2f}%" if finite else "n/a (regression)"


def summary_line(summary: dict, workdir) -> str:
    """The summary in one line: test figures, validation accuracy if any, time, folder."""
    valid = summary.get("valid_accuracy")  # absent from summaries written before it
    shown = "" if valid is None else f", valid accuracy {_percent(valid)}"
    return (f"test accuracy {_percent(summary['test_accuracy'])}, test loss "
            f"{float(summary['test_loss']):.4f}{shown}, {summary['wall_seconds']:.1f}s; "
            f"wrote {workdir}")  # fmt: skip
