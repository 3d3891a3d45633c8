"""A character-level GPT trained as nanoGPT's train.py does: `train_gpt(config, workdir)`.

The model is `jaxnet.gpt.gpt`, trained by `jaxnet.network_loss` (its whole VJP one
`jax.custom_vjp` with grad="fused") with AdamW: nanoGPT's learning-rate schedule (linear
warmup, cosine decay to min_lr), weight decay on the 2-D weights only, gradient clipping by
global norm. Each step draws batch_size random windows of block_size + 1 characters from the
training split, as nanoGPT's get_batch; the draw depends on the seed and the iteration only.

Training runs as jitted chunks, each a `lax.scan` of `chunk_length` steps with the data on
the device, sharded over the data-parallel mesh (`jaxnet.training.parallel`). After each
chunk a progress line; every eval_interval iterations and at the end, nanoGPT's loss
estimate (the mean over eval_iters random batches of each split) and a checkpoint. At the
end: the exact loss over the whole validation split, samples, and `results.json`.

The folder holds one run, as `jaxnet.training.job`'s: locked while a run works there; the
same command again resumes a stopped run (bitwise the uninterrupted one on CPU with the
same devices: chunk boundaries and every random draw depend only on the iteration; another
device count sums the gradient in another order) or returns a finished run's
results; other flags are refused (overwrite=True starts afresh). SIGINT or SIGTERM stops
after the chunk under way, with a checkpoint.
"""

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

import jaxnet
from jaxnet import _checks, _xla, gpt, losses, text
from jaxnet.training import _signals, checkpoint, files, job, lock, loop, parallel
from jaxnet.training import config as run_config

RESULTS = "results.json"
_CHECKPOINT = "checkpoint.npz"
_KEEP = 2  # checkpoints kept: the newest and the one before
_IGNORE = -1  # the label of padding in the evaluations
_CHUNK_TOKENS = 38_400  # tokens per chunk when log_interval is 0: 50 steps of 12 x 64
_MAX_EVAL_WINDOWS = 1_000_000  # per estimate: their ids are drawn on the host at once
_EVAL_GROUP = 16  # windows per device in a step of an evaluation call
_EVAL_STEPS = 16  # steps of an evaluation call (a lax.scan): 256 windows per device
GRADS = ("fused", "ops", "autodiff")
_OPTIMIZER_STATE = "clip and Adam on the raveled gradient"  # checkpoints record the layout


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """A GPT run's settings; the names and defaults are nanoGPT's (its train.py with
    config/train_shakespeare_char.py and the CPU settings of its README), validated."""

    text: str = "fortunes"  # a corpus name (jaxnet.text.CORPORA) or a UTF-8 file's path
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    dropout: float = 0.0
    bias: bool = False
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    decay_lr: bool = True
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_interval: int = 1000
    eval_iters: int = 200
    log_interval: int = 0  # iterations per jitted chunk and progress line; 0: `chunk_length`
    seed: int = 1337
    grad: str = "fused"
    sample_chars: int = 500
    temperature: float = 1.0
    stop_after_iter: int = 0  # stop (with a checkpoint) once this iteration is done; 0: never

    def __post_init__(self):
        problems = list(_problems(self))
        if problems:
            raise ValueError("; ".join(problems) + ".")

    @property
    def chunk_length(self) -> int:
        """Iterations per jitted chunk: log_interval, or for 0 about 38,400 tokens (50
        iterations at the defaults, 9 at batch 4 of 1024), a progress line every few
        seconds on a CPU whatever the size."""
        if self.log_interval:
            return self.log_interval
        return max(1, round(_CHUNK_TOKENS / (self.batch_size * self.block_size)))

    def recorded(self) -> dict[str, Any]:
        """The settings that define the run (what a resumed run must share)."""
        settings = dataclasses.asdict(self)
        settings.pop("stop_after_iter")
        return settings


def _problems(config: GPTConfig):
    checks = {
        "n_layer": _checks.positive_int, "n_head": _checks.positive_int,
        "n_embd": _checks.positive_int, "block_size": _checks.positive_int,
        "batch_size": _checks.positive_int, "max_iters": _checks.positive_int,
        "eval_interval": _checks.positive_int, "eval_iters": _checks.positive_int,
        "log_interval": lambda v, w: _nonnegative(_checks.integer(v, w), w),
        "lr_decay_iters": _checks.positive_int,
        "sample_chars": lambda v, w: v if v == 0 else _checks.positive_int(v, w),
        "warmup_iters": lambda v, w: _nonnegative(_checks.integer(v, w), w),
        "stop_after_iter": lambda v, w: _nonnegative(_checks.integer(v, w), w),
        "seed": _checks.integer, "bias": _checks.boolean, "decay_lr": _checks.boolean,
        "learning_rate": _positive, "min_lr": _nonnegative_number, "temperature": _positive,
        "weight_decay": _nonnegative_number, "grad_clip": _nonnegative_number,
        "beta1": _unit, "beta2": _unit, "dropout": _unit,
    }  # fmt: skip
    for name, check in checks.items():
        try:
            check(getattr(config, name), f"--{name}")
        except (TypeError, ValueError) as e:
            yield str(e).rstrip(".")
    if isinstance(config.n_embd, int) and isinstance(config.n_head, int) and config.n_head > 0:
        if config.n_embd % config.n_head:
            yield f"--n_embd={config.n_embd} must be a multiple of --n_head={config.n_head}"
    if isinstance(config.seed, int) and not 0 <= config.seed < 2**32:
        yield f"--seed={config.seed} must lie in [0, 2**32)"
    windows = config.eval_iters * config.batch_size
    if isinstance(windows, int) and windows > _MAX_EVAL_WINDOWS:
        yield (
            f"--eval_iters * --batch_size = {windows:,} windows an estimate; at most "
            f"{_MAX_EVAL_WINDOWS:,} (the default is 200 * 12 = 2,400)"
        )
    if config.grad not in GRADS:
        yield f"--grad={config.grad!r} must be one of {list(GRADS)}"
    if not isinstance(config.text, str) or not config.text.strip():
        yield f"--text={config.text!r} must name a corpus {list(text.CORPORA)} or a file"


def _nonnegative(value, what: str):
    if value < 0:
        raise ValueError(f"{what}={value} must be >= 0")
    return value


def _nonnegative_number(value, what: str):
    return _nonnegative(_checks.number(value, what), what)


def _positive(value, what: str):
    value = _checks.number(value, what)
    if not value > 0:
        raise ValueError(f"{what}={value} must be > 0")
    return value


def _unit(value, what: str):
    value = _checks.number(value, what)
    if not 0 <= value < 1:
        raise ValueError(f"{what}={value} must lie in [0, 1)")
    return value


# ----------------------------------------------------------------------- the model


def learning_rate(config: GPTConfig) -> optax.Schedule:
    """nanoGPT's get_lr(it): linear warmup from lr / (warmup + 1), cosine decay to min_lr
    at lr_decay_iters, min_lr after; the constant learning_rate with decay_lr=False."""
    lr, low = config.learning_rate, config.min_lr
    warmup, decay = config.warmup_iters, config.lr_decay_iters

    def schedule(it):
        if not config.decay_lr:
            return jnp.asarray(lr, jnp.float32)
        ratio = jnp.clip((it - warmup) / max(decay - warmup, 1), 0.0, 1.0)
        cosine = low + 0.5 * (1.0 + jnp.cos(jnp.pi * ratio)) * (lr - low)
        warm = lr * (it + 1) / (warmup + 1)
        return jnp.where(it < warmup, warm, jnp.where(it > decay, low, cosine))

    return schedule


def optimizer(config: GPTConfig) -> optax.GradientTransformation:
    """AdamW as nanoGPT configures it: clip by the global norm, Adam, decay on the 2-D
    weights only, the learning rate.

    The clipping and Adam's moments run on all the gradients raveled into one vector
    (`optax.flatten`): a few operations a step instead of a few for each of the ~30 leaves,
    which made a step about 3% faster on 2 CPU cores. The same arithmetic as
    `optax.adamw` (its order: Adam, decay, learning rate)."""
    clip = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    adam = optax.scale_by_adam(b1=config.beta1, b2=config.beta2, eps=1e-8)
    return optax.chain(
        optax.flatten(optax.chain(*clip, adam)),
        optax.add_decayed_weights(config.weight_decay, mask=gpt.decay_mask),
        optax.scale_by_learning_rate(learning_rate(config)),
    )


class Model(NamedTuple):
    """The built run: the network, its step and evaluations, compiled once each."""

    net: Any
    mesh: Any
    chunk: Callable  # (state, train, length) -> (state, losses [length])
    estimate: Callable  # (params, split ids, seed) -> mean loss over eval_iters batches
    full_loss: Callable  # (params, split ids) -> the exact mean loss over the split
    sample: Callable  # (params, prompt, key, temperature) -> ids
    compile_ahead: Callable  # (params, val size, prompt) -> None: compiles what follows


def _windows(data, starts, length: int):
    """The windows data[s : s + length] for each start: [len(starts), length]."""
    return jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (length,)))(starts)


def _batch(data, key, config: GPTConfig, sharding):
    """nanoGPT's get_batch: batch_size random windows; x the first block_size ids of each,
    y the next ones."""
    starts = jax.random.randint(key, (config.batch_size,), 0, data.shape[0] - config.block_size)
    windows = jax.lax.with_sharding_constraint(
        _windows(data, starts, config.block_size + 1), sharding
    )
    return windows[:, :-1], windows[:, 1:]


def build(config: GPTConfig, vocab_size: int, mesh, *, train=None) -> tuple[Model, loop.TrainState]:
    """The network, the optimizer's fresh state, and the jitted functions of the run.

    Given train (the training ids as the chunks will get them: replicated on the mesh), the
    program of a fresh run's first chunk compiles on a thread while the init compiles and
    runs, and is ready when build returns: about a second less on 2 cores. A resumed run
    whose first chunk is shorter compiles that one when it is called, and so does a call
    under a thread-local jax setting (`jax.default_matmul_precision(...)` and the like
    reach only the thread that entered them).
    """
    parallel.check_batch_size(config.batch_size, mesh)
    net = gpt.gpt(vocab_size, n_layer=config.n_layer, n_head=config.n_head,
                  n_embd=config.n_embd, block_size=config.block_size, bias=config.bias,
                  dropout=config.dropout)  # fmt: skip
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    shape = (config.batch_size, config.block_size)
    opt = optimizer(config)

    # One program, not one small compile per weight shape; it runs once, so compiled quickly.
    @functools.partial(jax.jit, compiler_options=_xla.QUICK_COMPILE)
    def fresh(init_key, data_key):
        _, params, net_state = net.init(init_key, shape)
        return loop.init_state(params, opt, data_key, net_state)

    rule = losses.cross_entropy()
    batch, everywhere = parallel.sharded_batch(mesh), parallel.replicated(mesh)

    def loss(params, net_state, x, y, key):
        return jaxnet.network_loss(net, params, net_state, x, y, loss=rule, grad=config.grad,
                                   train=True, key=key)  # fmt: skip

    value_and_grad = jax.value_and_grad(loss, has_aux=True)

    @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
    def chunk(state: loop.TrainState, data, length: int):
        base = jax.random.wrap_key_data(state.key)

        def one(carry, _):
            params, opt_state, net_state, it = carry
            batch_key, dropout_key = jax.random.split(jax.random.fold_in(base, it))
            x, y = _batch(data, batch_key, config, batch)
            (value, net_state), grads = value_and_grad(params, net_state, x, y, dropout_key)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, net_state, it + 1), value

        carry = (state.params, state.opt_state, state.net_state, state.step)
        (params, opt_state, net_state, it), values = jax.lax.scan(one, carry, length=length)
        return loop.TrainState(params, opt_state, it, state.key, net_state), values

    ahead = None
    if train is not None and not (
        isinstance(train, jax.Array) and train.sharding.is_equivalent_to(everywhere, train.ndim)
    ):
        what = (f"placed as {train.sharding}" if isinstance(train, jax.Array)
                else f"a {type(train).__name__}")  # fmt: skip
        raise TypeError(
            f"build: train is {what}; give the training ids placed as the chunks get them, "
            "jax.device_put(ids, parallel.replicated(mesh)), or leave it out."
        )
    if train is not None:
        # The chunk's program needs only the state's shapes and placement: it compiles on a
        # thread (XLA releases the GIL) while this one compiles and runs the init. A
        # failure there is ignored: the first chunk then compiles it again and raises.
        # Not weak-typed, as the state parallel.put places (it goes through numpy).
        placed_like = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=everywhere),
            jax.eval_shape(fresh, init_key, data_key),
        )
        train_like = jax.ShapeDtypeStruct(train.shape, train.dtype, sharding=train.sharding)
        first = _chunk_span(config, 0)[1]
        ahead = threading.Thread(target=_quietly, daemon=True, args=(
            lambda: chunk.lower(placed_like, train_like, first).compile(),))  # fmt: skip
        ahead.start()
    state = fresh(init_key, data_key)
    net_state = state.net_state

    ignoring = losses.cross_entropy(ignore_index=_IGNORE)

    group = _EVAL_GROUP * mesh.size  # windows per step of an evaluation call
    calls = NamedSharding(mesh, PartitionSpec(None, parallel.AXIS))  # [steps, group, ...]

    @functools.partial(jax.jit, in_shardings=(everywhere, calls, calls), out_shardings=calls)
    def window_sums(params, x, y):
        # [steps, group, T] ids and labels -> each window's summed loss and how many labels
        # it counted, [steps, group]: every evaluation is a sum of these, so one program
        # serves them all. Each device sums its own windows: with no collective, the calls
        # in flight at once never wait on each other.
        def one(_, xy):
            logits, _ = jaxnet.layers.apply(net, params, net_state, xy[0])
            counted = jnp.sum(xy[1] != _IGNORE, axis=-1)
            return None, (jax.vmap(ignoring.value)(logits, xy[1]) * counted, counted)

        return jax.lax.scan(one, None, (x, y))[1]

    def call_shape(windows: int) -> tuple[int, int, int]:
        # Calls of up to _EVAL_STEPS groups: one program for the estimates and the full pass
        # at the defaults, little padding for few windows.
        return min(_EVAL_STEPS, -(-windows // group)), group, config.block_size

    def windows_loss(params, x: np.ndarray, y: np.ndarray) -> float:
        # [n, T] windows in calls, the last one padded; every process passes the same whole
        # arrays and reads back every process's sums.
        steps, _, t = call_shape(len(x))
        x, y = _padded(x, y, steps * group)
        shape = (-1, steps, group, t)
        sums = [window_sums(params, parallel.put(xc, calls), parallel.put(yc, calls))
                for xc, yc in zip(x.reshape(shape), y.reshape(shape))]  # fmt: skip
        sums = multihost_utils.process_allgather(sums, tiled=True)
        total, counted = np.sum(sums, axis=(0, 2, 3), dtype=np.float64)
        return float(total / max(counted, 1))

    estimate_windows = config.eval_iters * config.batch_size

    def estimate(params, data: np.ndarray, key) -> float:
        # nanoGPT's estimate_loss: the mean of eval_iters batch means; the batches are all
        # the same size, so that is the mean over all their positions.
        rng = np.random.default_rng(key)
        starts = rng.integers(0, len(data) - config.block_size, estimate_windows)
        windows = data[starts[:, None] + np.arange(config.block_size + 1)]
        return windows_loss(params, windows[:, :-1], windows[:, 1:])

    def full_windows(data_size: int) -> int:
        return -(-(data_size - 1) // config.block_size)

    def full_loss(params, data: np.ndarray) -> float:
        # Every position but the first once as a label: ids[:-1] -> ids[1:] in windows of
        # block_size, the last padded with labels the loss ignores.
        x, y = _padded(data[:-1], data[1:], config.block_size)
        shape = (full_windows(len(data)), config.block_size)
        return windows_loss(params, x.reshape(shape), y.reshape(shape))

    generate = gpt.make_generate(net, config.block_size, max(config.sample_chars, 1))

    def sample(params, prompt, key, temperature):
        return generate(params, net_state, prompt, key, temperature)

    def compile_ahead(params, val_size: int, prompt) -> None:
        # The programs of the estimates, the full pass and the sampler, compiled now (jit
        # keeps them for the calls to come) so that a thread can do it while the first
        # chunk compiles and trains. Only the params' shapes and placement are read: the
        # chunk may donate the arrays meanwhile.
        params = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params
        )
        for shape in {call_shape(estimate_windows), call_shape(full_windows(val_size))}:
            ids = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=calls)
            window_sums.lower(params, ids, ids).compile()
        if config.sample_chars:
            generate.lower(params, net_state, prompt, jax.random.key(0), jnp.float32(1)).compile()

    placed = parallel.put(state, everywhere)
    if ahead is not None:
        ahead.join()  # before the first chunk, which would otherwise compile it a second time
    model = Model(net, mesh, chunk, estimate, full_loss, sample, compile_ahead)
    return model, placed


def _chunk_span(config: GPTConfig, it: int) -> tuple[int, int]:
    """From iteration it: the next iteration with an estimate, and the next chunk's length
    (chunk_length, cut short at that estimate)."""
    every = config.eval_interval
    boundary = min(config.max_iters, (it // every + 1) * every)
    return boundary, min(config.chunk_length - it % config.chunk_length, boundary - it)


def _padded(x: np.ndarray, y: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids x and labels y padded along their first axis to a multiple of `multiple`: x with
    id 0, y with labels the loss ignores."""
    widths = [(0, -len(x) % multiple)] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, widths), np.pad(y, widths, constant_values=_IGNORE)


# --------------------------------------------------------------------------- the run


def _prompt(corpus: text.Corpus):
    """What the samples follow: a newline, or the first character if the text has none."""
    return jnp.asarray(corpus.encode("\n" if "\n" in corpus.chars else corpus.chars[0]))


def _quietly(work: Callable, *args) -> None:
    try:
        work(*args)
    except Exception:  # noqa: BLE001 - see the caller
        pass


class Diverged(RuntimeError):
    """The training loss became non-finite; the last checkpoint is kept."""


Interrupted = job.Interrupted  # SIGINT or SIGTERM stopped the run; it was checkpointed


def _silent(line: str) -> None:
    del line


def _check_same_config(config: GPTConfig, then: dict, used: Path) -> None:
    run_config.check_same(config.recorded(), then, GPTConfig().recorded(), used)


def fingerprint(corpus: text.Corpus) -> dict:
    """What a run records of its text, to refuse going on with another one: its
    vocabulary and the sizes of its splits."""
    return {"chars": corpus.chars, "train": len(corpus.train), "val": len(corpus.val)}


def _check_same_text(corpus: text.Corpus, then: dict | None, used: Path) -> None:
    if then is not None and then != fingerprint(corpus):
        raise ValueError(
            f"{used} was trained on another text than --text={corpus.name} holds now "
            f"({then['train'] + then['val']:,} characters, {len(then['chars'])} distinct; now "
            f"{len(corpus.train) + len(corpus.val):,}, {corpus.vocab_size}): the file changed. "
            "Restore it, add --overwrite to train afresh, or choose another --output_dir."
        )


def _restore(config: GPTConfig, corpus: text.Corpus, workdir: Path, template, log):
    """(state, meta) of the newest readable checkpoint in workdir, or (None, None)."""

    def check(meta: dict, used: Path) -> None:
        _check_same_config(config, meta.get("config", {}), used)
        _check_same_text(corpus, meta.get("corpus"), used)
        if meta.get("optimizer") != _OPTIMIZER_STATE:
            raise checkpoint.CheckpointError(
                f"{used} was written by an earlier jaxnet, whose AdamW kept its moments leaf "
                "by leaf; this one keeps them raveled into one vector, so its optimizer state "
                "does not fit. Resume it with the jaxnet that wrote it, or train afresh."
            )
        done = meta.get("iter")
        if not (isinstance(done, int) and 0 < done <= config.max_iters):
            raise checkpoint.CheckpointError(
                f"{used}: its record says iteration {done!r}, not one of this run's "
                f"1..{config.max_iters}."
            )

    state, meta, used = checkpoint.restore_run(workdir / _CHECKPOINT, template, _KEEP, check, log)
    if state is not None:
        log(f"resumed from {used} after iteration {meta['iter']}")
    return state, meta


def _corpus(config: GPTConfig) -> text.Corpus:
    corpus = text.load(config.text)
    need = config.block_size + 2
    for split in ("train", "val"):
        if len(getattr(corpus, split)) < need:
            raise ValueError(
                f"--text={config.text}: its {split} split has {len(getattr(corpus, split))} "
                f"characters, fewer than --block_size + 2 = {need}; use a longer text or a "
                "smaller --block_size."
            )
    return corpus


class _Progress(NamedTuple):
    """What a run has done so far; a checkpoint's record holds it."""

    iteration: int
    wall: float  # seconds of the earlier commands that worked on this run
    train_seconds: float  # seconds in training chunks of a length already compiled
    timed_iters: int  # iterations in those chunks
    history: list  # the loss estimates: {"iter", "train_loss", "val_loss"}


def train_gpt(
    config: GPTConfig,
    workdir: str | Path,
    *,
    log: Callable[[str], None] = _silent,
    overwrite: bool = False,
    started: float | None = None,
) -> dict | None:
    """Trains the GPT as `config` says, in workdir; or returns the finished run's results.

    Args:
      config: the run's settings.
      workdir: the output folder: results.json, checkpoint.npz and checkpoint.1.npz.
      log: receives each progress line.
      overwrite: discard the run in workdir (its results and checkpoints) and train afresh.
      started: the `time.time()` at which the command began (default: now), so that
        results' `seconds` covers the whole command.

    Returns:
      The results also written to results.json, or None if stop_after_iter stopped the run.

    Raises:
      ValueError: bad settings, text or output folder, or a run in workdir with other flags.
      lock.FolderLocked: another run holds workdir.
      checkpoint.CheckpointError: no checkpoint in workdir is readable or fits this run.
      Diverged: the training loss became non-finite.
      Interrupted: SIGINT or SIGTERM; the last finished chunk was checkpointed.
    """
    started = time.time() if started is None else started
    if not str(workdir).strip():
        raise ValueError("workdir is empty; name the output folder, e.g. 'runs/gpt'.")
    workdir = Path(workdir)
    parallel.assert_same_on_all_processes(str(sorted(config.recorded().items())))
    corpus = _corpus(config)  # a bad text is refused before the output folder is made
    with lock.claim(workdir, [_CHECKPOINT, RESULTS]) as held:
        if not overwrite:
            results = files.read_run_record(workdir / RESULTS)
            if results is not None:
                _check_same_config(config, results["config"], workdir / RESULTS)
                _check_same_text(corpus, results.get("corpus"), workdir / RESULTS)
                log(f"{workdir}: already trained; --overwrite to train again")
                return results
        return _Run(config, workdir, log, held, started).train(corpus, overwrite)


class _Run(NamedTuple):
    config: GPTConfig
    workdir: Path
    log: Callable[[str], None]
    held: Any  # process 0's lock on workdir
    started: float

    def wall(self, progress: _Progress) -> float:
        """Seconds of the earlier commands of this run and of this one so far."""
        return progress.wall + time.time() - self.started

    def save(self, state, progress: _Progress, corpus: text.Corpus) -> None:
        if jax.process_index() == 0:
            self.held.verify()  # never write over another run's files
            meta = {"config": self.config.recorded(), "iter": progress.iteration,
                    "corpus": fingerprint(corpus),
                    "wall": self.wall(progress), "train_seconds": progress.train_seconds,
                    "timed_iters": progress.timed_iters, "history": progress.history,
                    "optimizer": _OPTIMIZER_STATE}  # fmt: skip
            checkpoint.save(self.workdir / _CHECKPOINT, state, meta, keep=_KEEP)

    def train(self, corpus: text.Corpus, overwrite: bool) -> dict | None:
        config, log = self.config, self.log
        mesh = parallel.make_mesh()
        train = jax.device_put(corpus.train, parallel.replicated(mesh))
        model, state = build(config, corpus.vocab_size, mesh, train=train)
        restored, meta = (
            (None, None) if overwrite else _restore(config, corpus, self.workdir, state, log)
        )
        if overwrite and jax.process_index() == 0:
            for path in [self.workdir / RESULTS, *checkpoint.rotated_paths(
                    self.workdir / _CHECKPOINT, _KEEP)]:  # fmt: skip
                path.unlink(missing_ok=True)
        if restored is not None:
            state = parallel.put(restored, parallel.replicated(mesh))
        progress = _Progress(0, 0.0, 0.0, 0, []) if meta is None else _Progress(
            meta["iter"], meta.get("wall", 0.0), meta.get("train_seconds", 0.0),
            meta.get("timed_iters", 0), meta.get("history", []))  # fmt: skip
        log(f"{gpt.count_parameters(state.params):,} parameters, vocabulary of "
            f"{corpus.vocab_size}, {len(corpus.train):,} training and {len(corpus.val):,} "
            f"validation characters of {corpus.name}; {mesh.size} device(s)")  # fmt: skip
        # The other programs compile on a thread while the first chunk trains. A failure
        # there is ignored: the call itself raises it.
        # Waited for only when the loop ends well: a stop or an error does not wait on it.
        ahead = threading.Thread(target=_quietly, args=(model.compile_ahead, state.params,
                                 len(corpus.val), _prompt(corpus)), daemon=True)  # fmt: skip
        ahead.start()
        with _signals.deferred_stop_signals() as received:
            ended = self._loop(model, state, progress, corpus, train, received)
            ahead.join()
        if ended is None:
            return None
        state, progress = ended
        val_full = model.full_loss(state.params, corpus.val)
        samples = self._samples(model, state, corpus)
        wall = self.wall(progress)
        final = progress.history[-1]
        per_iter = progress.train_seconds / progress.timed_iters if progress.timed_iters else None
        tokens = config.batch_size * config.block_size
        results = {
            "train_loss": final["train_loss"], "val_loss": final["val_loss"],
            "val_loss_full": val_full, "seconds": wall,
            "ms_per_iter": per_iter and 1e3 * per_iter,
            "tokens_per_second": per_iter and tokens / per_iter, "corpus": fingerprint(corpus),
            "parameters": gpt.count_parameters(state.params), "samples": samples,
            "iterations": progress.iteration, "history": progress.history,
            "text": corpus.name, "vocab_size": corpus.vocab_size, "devices": mesh.size,
            "backend": jax.default_backend(), "config": config.recorded(),
        }  # fmt: skip
        if jax.process_index() == 0:
            self.held.verify()
            files.write_json_atomic(self.workdir / RESULTS, results)
        return results

    def _loop(self, model: Model, state, progress: _Progress, corpus, train, received):
        """Trains from progress.iteration to max_iters: (state, progress), or None if
        stop_after_iter stopped it."""
        config, log = self.config, self.log
        # The first chunk of each length is not timed: it compiles, or (a fresh run's
        # first, compiled in build) shares the cores with compile_ahead's thread.
        compiled, untimed = set(), None
        it = progress.iteration
        saved = it or None  # the iteration of the checkpoint on disk
        while it < config.max_iters:
            boundary, length = _chunk_span(config, it)
            tick = time.perf_counter()
            state, values = model.chunk(state, train, length)
            values = np.asarray(values)  # waits for the chunk
            seconds = time.perf_counter() - tick
            it += length
            if not np.isfinite(values).all():
                bad = it - length + int(np.argmin(np.isfinite(values)))
                kept = (f"{self.workdir / _CHECKPOINT}, of iteration {saved}, is kept" if saved
                        else "no checkpoint was written")  # fmt: skip
                raise Diverged(f"the training loss became {values[~np.isfinite(values)][0]} at "
                               f"iteration {bad}; {kept}. Lower --learning_rate or raise "
                               "--warmup_iters.")  # fmt: skip
            if length in compiled:
                progress = progress._replace(train_seconds=progress.train_seconds + seconds,
                                             timed_iters=progress.timed_iters + length)  # fmt: skip
            else:
                compiled.add(length)
                untimed = (seconds, length)  # the figures if no other chunk is timed
            tokens = config.batch_size * config.block_size * length
            log(
                f"iter {it}/{config.max_iters}: loss {values[-1]:.4f}, "
                f"{1e3 * seconds / length:.1f} ms/iter, {tokens / seconds:,.0f} tokens/s"
            )
            progress = progress._replace(iteration=it)
            if it == config.max_iters and not progress.timed_iters:  # no chunk was timed
                progress = progress._replace(train_seconds=untimed[0], timed_iters=untimed[1])
            signum = _signals.stop_requested(received)
            stop = 0 < config.stop_after_iter <= it and it - length < config.stop_after_iter
            if it == boundary:
                # The batches depend on the seed, the iteration and the split only.
                losses_now = {name: model.estimate(state.params, data, [config.seed, it, i])
                              for i, (name, data) in enumerate((("train", corpus.train),
                                                                ("val", corpus.val)))}  # fmt: skip
                history = [*progress.history, {"iter": it, "train_loss": losses_now["train"],
                                               "val_loss": losses_now["val"]}]  # fmt: skip
                progress = progress._replace(history=history)
                log(f"step {it}: train loss {losses_now['train']:.4f}, val loss "
                    f"{losses_now['val']:.4f}")  # fmt: skip
            if it == boundary or signum or stop:
                self.save(state, progress, corpus)
                saved = it
            if signum and it < config.max_iters:
                after, where = f"iteration {it} of {config.max_iters}", self.workdir / _CHECKPOINT
                raise Interrupted(_signals.stopped(signum, after, where), signum)
            if stop and it < config.max_iters:
                log(f"stopped after iteration {it}; run the same command again to continue")
                return None
        return state, progress

    def _samples(self, model: Model, state, corpus: text.Corpus) -> str:
        """sample_chars characters drawn after a newline (or the first character) from the
        seed, at the configured temperature."""
        if not self.config.sample_chars:
            return ""
        key = jax.random.fold_in(jax.random.key(self.config.seed), 2)
        ids = model.sample(state.params, _prompt(corpus), key, jnp.float32(self.config.temperature))
        return corpus.decode(np.asarray(ids)[: self.config.sample_chars])
