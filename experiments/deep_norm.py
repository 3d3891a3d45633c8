r"""fast.ai lessons 10 and 11 (miniai 06/07): why init and normalization matter in a deep net.

An MLP of --depth hidden layers of --width, trained with the same optimizer, data order
and budget in five ways:
  relu          dense (kaiming_normal) -> relu
  general_relu  dense (kaiming_normal) -> general_relu(leak=0.1, sub=0.4)
  lsuv          dense (orthogonal) -> general_relu, then `jaxnet.lsuv.rescale` on a batch
  batch_norm    dense (kaiming_normal, no bias) -> batch_norm -> general_relu
  layer_norm    dense (kaiming_normal, no bias) -> layer_norm -> general_relu
A `jaxnet.lessons.stats.probe()` after each activation records its mean, std, fraction near zero
and histogram of |x| as layer state, which every step of the jitted `lax.scan` returns:
fast.ai's hooks, without Python hooks.

Writes results.json, std_per_layer.png and colorful_dimension.png, and prints a table of
test accuracy and the first step at which any layer's std leaves [0.1, 10].

  python -m experiments.deep_norm                       # Fashion-MNIST, 3 epochs
  python -m experiments.deep_norm --dataset=digits      # offline, 20 epochs
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import common
from jaxnet import layers, lsuv, network
from jaxnet.lessons import stats
from jaxnet.training import data, loop

ARMS = ("relu", "general_relu", "lsuv", "batch_norm", "layer_norm")
EPOCHS = {"fashion_mnist": 3, "mnist": 3, "digits": 20}

_DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", list(EPOCHS), "Which data to train on.")
_DATA_DIR = common.define_path("data_dir", None, "Folder looked in first for the data files.")
_DOWNLOAD = flags.DEFINE_boolean("download", True, "Download Fashion-MNIST/MNIST if absent.")
_DEPTH = flags.DEFINE_integer("depth", 8, "Hidden layers.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 256, "Units per hidden layer.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer(
    "epochs", None, f"Epochs per arm (default per dataset: {EPOCHS}).", lower_bound=1
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per step.", lower_bound=2)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.1, "SGD step size.", lower_bound=0)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0, upper_bound=0.999)
_ARMS = flags.DEFINE_list("arms", list(ARMS), f"Which of {list(ARMS)} to train.")
_GRAD = flags.DEFINE_enum("grad", "fused", list(network.GRADS), "Which gradient.")
_LSUV_BATCH = flags.DEFINE_integer(
    "lsuv_batch", 512, "Training examples LSUV rescales on.", lower_bound=2
)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed (init, data order).")
_OUTPUT_DIR = common.define_path("output_dir", "runs/deep_norm", "Where outputs go.")

flags.register_validator(
    "arms", lambda v: bool(v) and set(v) <= set(ARMS), f"--arms must list some of {list(ARMS)}."
)


def block(arm: str, width: int) -> list[layers.Layer]:
    """One hidden layer of the arm, ending in a probe of its activation's output."""
    act = layers.relu() if arm == "relu" else layers.general_relu(leak=0.1, sub=0.4)
    norm = {"batch_norm": [layers.batch_norm()], "layer_norm": [layers.layer_norm()]}
    norm = norm.get(arm, [])
    init = "orthogonal" if arm == "lsuv" else "kaiming_normal"
    return [layers.dense(width, init=init, bias=not norm), *norm, act, stats.probe()]


def make_net(arm: str, depth: int, width: int, classes: int) -> layers.Layer:
    hidden = [layer for _ in range(depth) for layer in block(arm, width)]
    return layers.serial(*hidden, layers.dense(classes))


def probes(state: list) -> dict:
    """The probes' states, stacked: {"mean": [layers], ..., "hist": [layers, bins]}."""
    found = [s for s in state if isinstance(s, dict) and "hist" in s]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *found)


def make_fit(net: layers.Layer, optimizer, grad: str):
    """Jitted fit(params, state, x, y, indices [steps, batch]) -> (params, state, trace):
    one `lax.scan` of SGD steps; trace holds each step's loss and probe statistics."""

    def loss(params, state, xb, yb):
        return network.network_loss(net, params, state, xb, yb, loss="cross_entropy",
                                    grad=grad, train=True)  # fmt: skip

    def step(carry, idx, x, y):
        params, state, opt_state = carry
        grad_fn = jax.value_and_grad(loss, has_aux=True)
        (value, state), grads = grad_fn(params, state, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, state, opt_state), {"loss": value, **probes(state)}

    @jax.jit
    def fit(params, state, x, y, indices):
        carry = (params, state, optimizer.init(params))
        (params, state, _), trace = jax.lax.scan(lambda c, i: step(c, i, x, y), carry, indices)
        return params, state, trace

    return fit


def _every(a: np.ndarray, points: int = 200) -> list:
    return a[:: max(1, len(a) // points)].tolist()


def run_arm(arm: str, splits, *, depth: int, width: int, indices, optimizer, grad: str,
            lsuv_rows, seed: int) -> tuple[dict, dict]:  # fmt: skip
    """Trains one arm; (its summary for results.json, its full probe trace for the plots)."""
    x, y, x_test, y_test, classes = splits
    net = make_net(arm, depth, width, classes)
    start = time.perf_counter()
    _, params, state = net.init(jax.random.key(seed), (2, x.shape[1]))
    if arm == "lsuv":
        params = lsuv.rescale(net, params, state, x[lsuv_rows])
    params, state, trace = make_fit(net, optimizer, grad)(params, state, x, y, indices)
    trace = jax.tree_util.tree_map(np.asarray, trace)
    padded = loop.pad_rows(x_test, y_test, jax.device_count())  # rows split over devices
    test_loss, test_acc = loop.make_evaluate(net, "cross_entropy")(params, state, *padded)
    step, layer = stats.first_out_of_band(trace["std"])
    summary = dict(
        arm=arm, test_accuracy=float(test_acc), test_loss=float(test_loss),
        first_step_out_of_band=step, first_layer_out_of_band=layer,
        final_train_loss=float(np.mean(trace["loss"][-20:])),
        final_std=trace["std"][-1].tolist(), final_mean=trace["mean"][-1].tolist(),
        final_near_zero=trace["near_zero"][-1].tolist(),
        std_per_step=_every(trace["std"]), seconds=time.perf_counter() - start,
    )  # fmt: skip
    return summary, trace


def print_row(r: dict) -> None:
    where = "never" if r["first_step_out_of_band"] is None else (
        f"{r['first_step_out_of_band']} (layer {r['first_layer_out_of_band']})")  # fmt: skip
    print(f"{r['arm']:13} {r['test_accuracy']:8.2%} {r['final_train_loss']:10.3f} "
          f"{where:>18} {r['seconds']:7.1f}", flush=True)  # fmt: skip


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_std(traces: dict, path: str) -> str:
    """One panel per arm: each layer's activation std over the steps (log scale)."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is missing: pip install -e '.[plot]' for the PNGs"
    fig, axes = plt.subplots(1, len(traces), figsize=(4 * len(traces), 3.4), squeeze=False)
    for ax, (arm, trace) in zip(axes[0], traces.items()):
        std = np.clip(np.nan_to_num(trace["std"], nan=1e6, posinf=1e6), 1e-6, 1e6)
        for layer in range(std.shape[1]):
            ax.semilogy(std[:, layer], label=f"{layer + 1}", lw=1)
        ax.axhspan(*stats.HOLDS, color="0.9", zorder=0)
        ax.set(title=arm, xlabel="step")
    axes[0][0].set_ylabel("activation std (band: [0.1, 10])")
    axes[0][-1].legend(title="layer", fontsize=6, ncol=2)
    return _save(fig, path)


def plot_colorful(traces: dict, path: str) -> str:
    """fast.ai's colorful dimension: per arm (rows) and layer (columns), log(1 + count) of
    |activation| in each histogram bin (up) over the steps (across)."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is missing: pip install -e '.[plot]' for the PNGs"
    depth = next(iter(traces.values()))["hist"].shape[1]
    fig, axes = plt.subplots(len(traces), depth, figsize=(1.6 * depth, 1.5 * len(traces)),
                             squeeze=False)  # fmt: skip
    for row, (arm, trace) in zip(axes, traces.items()):
        for layer, ax in enumerate(row):
            ax.imshow(np.log1p(trace["hist"][:, layer].T), origin="lower", aspect="auto")
            ax.set(xticks=[], yticks=[])
            ax.set_title(f"layer {layer + 1}", fontsize=7)
        row[0].set_ylabel(arm, fontsize=8)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    fig.tight_layout()
    return f"wrote {common.save_png(fig, path)}"


def load_splits(name: str, data_dir, download: bool):
    """(x_train, y_train, x_test, y_test, classes) on the device, normalized (lesson 003)."""
    try:
        ds = data.load(name, data_dir, download_ok=download)
    except data.DataError as e:
        raise SystemExit(f"deep_norm: {e}\nOr run offline with --dataset=digits.") from None
    norm = data.fit_normalizer(ds.x_train)
    return (jnp.asarray(norm(ds.x_train)), jnp.asarray(ds.y_train), jnp.asarray(norm(ds.x_test)),
            jnp.asarray(ds.y_test), ds.num_classes)  # fmt: skip


def main(argv):
    del argv
    common.quiet_jax_logs()
    start = time.perf_counter()
    splits = load_splits(_DATASET.value, _DATA_DIR.value, _DOWNLOAD.value)
    epochs = _EPOCHS.value or EPOCHS[_DATASET.value]
    n = splits[0].shape[0]
    order_key, lsuv_key = jax.random.split(jax.random.key(_SEED.value + 1))
    indices = jnp.concatenate([loop.epoch_indices(k, n, min(_BATCH_SIZE.value, n))
                               for k in jax.random.split(order_key, epochs)])  # fmt: skip
    lsuv_rows = jax.random.permutation(lsuv_key, n)[: _LSUV_BATCH.value]
    optimizer = optax.sgd(_LEARNING_RATE.value, momentum=_MOMENTUM.value or None)
    print(f"{_DATASET.value}: {_DEPTH.value} x {_WIDTH.value}, {epochs} epochs = "
          f"{indices.shape[0]} steps of {indices.shape[1]} per arm")  # fmt: skip
    print(f"{'arm':13} {'test acc':>8} {'train loss':>10} {'std leaves band':>18} {'seconds':>7}")
    summaries, traces = [], {}
    for arm in _ARMS.value:
        summary, traces[arm] = run_arm(
            arm, splits, depth=_DEPTH.value, width=_WIDTH.value, indices=indices,
            optimizer=optimizer, grad=_GRAD.value, lsuv_rows=lsuv_rows, seed=_SEED.value,
        )  # fmt: skip
        summaries.append(summary)
        print_row(summary)
    print(plot_std(traces, f"{_OUTPUT_DIR.value}/std_per_layer.png"))
    print(plot_colorful(traces, f"{_OUTPUT_DIR.value}/colorful_dimension.png"))
    results = dict(dataset=_DATASET.value, depth=_DEPTH.value, width=_WIDTH.value, epochs=epochs,
                   steps=int(indices.shape[0]), batch_size=int(indices.shape[1]),
                   learning_rate=_LEARNING_RATE.value, momentum=_MOMENTUM.value,
                   grad=_GRAD.value, seed=_SEED.value, band=list(stats.HOLDS), arms=summaries,
                   seconds=time.perf_counter() - start)  # fmt: skip
    print(f"wrote {common.write_results(_OUTPUT_DIR.value, results)} "
          f"({results['seconds']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
