r"""Makemore part 4, "becoming a backprop ninja", in JAX, on real names.

Part 1: one batch through the character MLP, every gradient written out by hand, line by
line, each compared with `jax.grad` of the same intermediate; then the fused cross-entropy
backward and the one-line batch_norm backward against that chain, and the `jaxnet.layers`
network's fused hand VJP against the lecture's.
Part 2: the same net built from `jaxnet.layers`, trained with `network_loss(grad="fused")`
under optax, and compared with the counting bigram model; then names sampled from it.

The names are the US Census lists of the `names` package (pip install names==0.3.0).

  python -m experiments.makemore [--names=first]
"""

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common
from jaxnet import layers
from jaxnet.lessons import bigram, makemore, names, ninja
from jaxnet.training import loop

_OPTIMIZERS = ("adam", "adamw", "nadam", "sgd", "rmsprop", "lion")

_NAMES = flags.DEFINE_enum("names", "surnames", tuple(names.FILES), "Which name list.")
_BLOCK_SIZE = flags.DEFINE_integer("block_size", 3, "Characters of context.", lower_bound=1)
_EMBEDDING_DIM = flags.DEFINE_integer(
    "embedding_dim", 32, "Embedding size per character.", lower_bound=1
)
_HIDDEN = flags.DEFINE_integer("hidden", 300, "Hidden units (before batch_norm).", lower_bound=1)
# The 4,130 training first names overfit long before 30k steps: validation loss is best near 3k.
DEFAULT_STEPS = {"surnames": 30_000, "first": 3_000}
_STEPS = flags.DEFINE_integer(
    "steps", None, f"Optimizer steps; default per --names: {DEFAULT_STEPS}.", lower_bound=1
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 128, "Examples per step (batch_norm needs 2).", lower_bound=2
)
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", _OPTIMIZERS, "The optax optimizer.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-3, "Peak step size.", lower_bound=0)
_SCHEDULE = flags.DEFINE_enum("schedule", "cosine", loop.SCHEDULES, "Learning-rate schedule.")
_CHUNK_STEPS = flags.DEFINE_integer(
    "chunk_steps", 1000, "Steps per jitted lax.scan between progress checks.", lower_bound=1
)
_PRINT_EVERY = flags.DEFINE_float(
    "print_every", 5.0, "Seconds between progress lines.", lower_bound=0
)
_PART1_BATCH = flags.DEFINE_integer(
    "part1_batch", 32, "Batch of part 1's hand backward (the lecture's 32).", lower_bound=2
)
_SAMPLES = flags.DEFINE_integer("samples", 20, "Names to sample at the end.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed: initialisation, batches, samples.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/makemore", "Where results go.")
_ALL_FLAGS = (_NAMES, _BLOCK_SIZE, _EMBEDDING_DIM, _HIDDEN, _STEPS, _BATCH_SIZE, _OPTIMIZER,
              _LEARNING_RATE, _SCHEDULE, _CHUNK_STEPS, _PRINT_EVERY, _PART1_BATCH, _SAMPLES,
              _SEED, _OUTPUT_DIR)  # fmt: skip


def _part1(key, windows: names.Windows, batch: int) -> dict:
    """Every hand gradient of one batch against jax.grad, printed as the lecture's cmp."""
    init_key, rows_key = jax.random.split(key)
    params = ninja.init_params(
        init_key, vocab=names.VOCAB, block_size=_BLOCK_SIZE.value,
        embedding_dim=_EMBEDDING_DIM.value, hidden=_HIDDEN.value,
    )  # fmt: skip
    rows = jax.random.randint(rows_key, (batch,), 0, len(windows.y))
    x, y = jnp.asarray(windows.x)[rows], jnp.asarray(windows.y)[rows]
    loss, v = ninja.forward(params, x, y)
    mine = ninja.backward(params, v, x, y)
    auto = ninja.autodiff(params, x, y)
    steps = [ninja.cmp(name, mine[name], auto[name]) for name in ninja.ORDER]
    print(f"Part 1: one batch of {batch}, loss {float(loss):.4f}; hand vs jax.grad, step by step")
    print(ninja.table(steps))
    print(
        "(bnvar divides by n, as jaxnet.layers.batch_norm normalises; the lecture divides by\n"
        " n - 1, which makes dbndiff2 = dbnvar / (n - 1) and puts n / (n - 1) before the\n"
        " one-line backward's last term. jaxnet.lessons.ninja's bessel=True is the lecture's.)"
    )
    fused = _fused_rows(params, v, x, y, mine)
    print("\nThe fused backward passes against the step-by-step chain:")
    print(ninja.table(fused))
    return {"loss": float(loss), "steps": [r._asdict() for r in steps],
            "fused": [r._asdict() for r in fused]}  # fmt: skip


def _fused_rows(params, v, x, y, mine) -> list[ninja.Row]:
    """The two one-liners against the chain, and the gradient part 2 trains with (the
    `jaxnet.layers` network's fused hand VJP) against the chain's parameter gradients."""
    dlogits = ninja.cross_entropy_backward(v["logits"], y)
    dhprebn = ninja.batch_norm_backward(params["bngain"], v["bnvar_inv"], v["bnraw"],
                                        mine["hpreact"])  # fmt: skip
    rows = [ninja.cmp("logits (fused cross-entropy)", dlogits, mine["logits"]),
            ninja.cmp("hprebn (one-line batch_norm)", dhprebn, mine["hprebn"])]  # fmt: skip
    net = makemore.model(
        vocab=names.VOCAB, embedding_dim=_EMBEDDING_DIM.value, hidden=_HIDDEN.value
    ).net
    _, _, state = _init(net, jax.random.key(0), len(y))
    grads_fn = jax.jit(jax.grad(lambda p: makemore.loss(net, p, state, x, y)[0]))
    got, want = grads_fn(makemore.from_lecture(params)), makemore.from_lecture(mine)
    for i, leaf in (0, "table"), (2, "w"), (3, "scale"), (3, "bias"), (5, "w"), (5, "b"):
        # atol 1e-7, not 1e-8: the same float32 sums, added in another order
        rows.append(ninja.cmp(f"layers[{i}].{leaf} (network_loss fused)", got[i][leaf],
                              want[i][leaf], atol=1e-7))  # fmt: skip
    return rows


def _steps() -> int:
    return _STEPS.value or DEFAULT_STEPS[_NAMES.value]


def _init(net, key, batch: int):
    return layers.init(net, key, (batch, _BLOCK_SIZE.value))


def _train(model: makemore.Model, key, x: np.ndarray, y: np.ndarray) -> dict:
    """Part 2: steps in jitted chunks, a progress line every few seconds."""
    init_key, data_key = jax.random.split(key)
    _, params, state = _init(model.net, init_key, _BATCH_SIZE.value)
    steps = _steps()
    optimizer = loop.make_training_optimizer(
        _OPTIMIZER.value, _LEARNING_RATE.value, _SCHEDULE.value, steps
    )
    opt_state = optimizer.init(params)
    x, y = jax.device_put(x), jax.device_put(y)  # the whole training split, on the device
    chunks, curve, done, done_at_print = {}, [], 0, 0
    start = last_print = time.perf_counter()
    for chunk_key in jax.random.split(data_key, math.ceil(steps / _CHUNK_STEPS.value)):
        length = min(_CHUNK_STEPS.value, steps - done)
        if length not in chunks:  # a shorter last chunk compiles once more
            chunks[length] = makemore.make_train_chunk(
                model.net, optimizer, batch_size=_BATCH_SIZE.value, length=length
            )
        params, state, opt_state, losses = chunks[length](params, state, opt_state, chunk_key, x, y)
        done += length
        curve.append((done, float(jnp.mean(losses))))
        now = time.perf_counter()
        if now - last_print >= _PRINT_EVERY.value or done == steps:
            rate = (done - done_at_print) / (now - last_print)  # since the last line
            print(f"step {done:7d}/{steps}  loss {curve[-1][1]:.4f}  {rate:7.0f} steps/s")
            last_print, done_at_print = now, done
    seconds = time.perf_counter() - start
    return {"params": params, "state": state, "curve": curve, "train_seconds": seconds}


def _plot(curve, val_loss: float, bigram_loss: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*curve)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, label="train minibatch loss (mean per chunk)")
    ax.axhline(val_loss, color="C1", ls="--", label=f"validation, eval mode ({val_loss:.3f})")
    ax.axhline(bigram_loss, color="C2", ls=":", label=f"counting bigram, test ({bigram_loss:.3f})")
    ax.set(xlabel="step", ylabel="nats per character", title="makemore MLP")
    ax.legend()
    fig.tight_layout()
    common.save_png(fig, path)


def _data():
    """(distinct names, {split: names}, {split: Windows})."""
    words = names.load(_NAMES.value)
    splits = dict(zip(("train", "val", "test"), names.split(words)))
    windows = {k: names.windows(v, _BLOCK_SIZE.value) for k, v in splits.items()}
    sizes = ", ".join(f"{k} {len(v)} names / {len(windows[k].y)} characters"
                      for k, v in splits.items())  # fmt: skip
    print(f"{_NAMES.value}: {len(words)} distinct names; {sizes}\n")
    return words, splits, windows


def _evaluate(model, trained, splits, windows, sample_key) -> dict:
    """Each split's loss in eval mode (batch_norm calibrated on train), the bigram's, samples."""
    params = trained["params"]
    state = makemore.calibrate(model, params, trained["state"], windows["train"].x)
    results = {f"{k}_loss": makemore.nll(model.net, params, state, w.x, w.y)
               for k, w in windows.items()}  # fmt: skip
    probs = bigram.fit(splits["train"])
    results.update({f"bigram_{k}_loss": bigram.loss(probs, v) for k, v in splits.items()})
    results["test_below_bigram"] = results["bigram_test_loss"] - results["test_loss"]
    logits = makemore.logits_fn(model.net, params, state)
    count, block = _SAMPLES.value, _BLOCK_SIZE.value
    results["samples"] = (
        names.sample(sample_key, logits, count=count, block_size=block) if count else []
    )
    return results


def run() -> dict:
    """The whole experiment; returns what results.json holds, less `seconds`."""
    words, splits, windows = _data()
    part1_key, train_key, sample_key = jax.random.split(jax.random.key(_SEED.value), 3)
    start = time.perf_counter()
    part1 = _part1(part1_key, windows["train"], _PART1_BATCH.value)
    part1["seconds"] = time.perf_counter() - start

    model = makemore.model(
        vocab=names.VOCAB, embedding_dim=_EMBEDDING_DIM.value, hidden=_HIDDEN.value
    )
    print(f"\nPart 2: {_OPTIMIZER.value} {_LEARNING_RATE.value:g} ({_SCHEDULE.value}), "
          f"batch {_BATCH_SIZE.value}, {_steps()} steps")  # fmt: skip
    trained = _train(model, train_key, windows["train"].x, windows["train"].y)
    start = time.perf_counter()
    results = _evaluate(model, trained, splits, windows, sample_key)
    return {
        **results, "curve": trained["curve"],
        "train_seconds": trained["train_seconds"],
        "evaluate_seconds": time.perf_counter() - start,
        "steps_per_second": _steps() / trained["train_seconds"],
        "part1": part1, "part1_ok": all(r["approximate"] for r in part1["steps"] + part1["fused"]),
        "names": _NAMES.value, "names_count": len(words),
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "flags": {**{f.name: f.value for f in _ALL_FLAGS}, "steps": _steps()},
    }  # fmt: skip


def main(argv):
    del argv
    start = time.perf_counter()
    common.quiet_jax_logs()
    try:
        results = run()
    except names.NamesError as e:
        sys.exit(f"makemore: error: {e}")
    print("\nloss in nats per character (eval-mode batch_norm, calibrated on train):")
    for split in ("train", "val", "test"):
        print(f"  {split:5s} {results[split + '_loss']:.4f}   "
              f"counting bigram {results['bigram_' + split + '_loss']:.4f}")  # fmt: skip
    print(f"test loss {results['test_below_bigram']:.4f} below the bigram's")
    print(f"part 1 {results['part1']['seconds']:.1f} s, training {results['train_seconds']:.1f} s, "
          f"evaluation and samples {results['evaluate_seconds']:.1f} s")  # fmt: skip
    print(f"\n{len(results['samples'])} samples: {', '.join(results['samples'])}")
    out = _OUTPUT_DIR.value
    _plot(results["curve"], results["val_loss"], results["bigram_test_loss"], f"{out}/loss.png")
    results["seconds"] = time.perf_counter() - start
    print(f"\n{results['seconds']:.1f} s; wrote {common.write_results(out, results)} "
          f"and {out}/loss.png")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
