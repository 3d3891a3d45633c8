r"""Lesson 002's Bernoulli gate: a hand backward where autodiff has none.

A gate per input feature, z ~ Bernoulli(sigmoid(a)), learns which features of the 8x8
digits to keep: the net is bernoulli_gate -> dense -> relu -> dense(10), trained on
cross-entropy plus `--sparsity` times the fraction of gates drawn open. `--noise_features`
columns of uniform noise are appended, which a good gate closes.

Two arms from the same start, the same optimizer and the same data:
  straight_through  network_loss(grad="fused"): the gate's hand VJP, the straight-through
                    estimator dz/da := p (1 - p) (see `jaxnet.layers.bernoulli_gate`)
  autodiff_sample   jax.grad of the plain sampled forward: the sample's derivative in a is
                    0 almost everywhere, so the logits get exactly zero gradient

  python -m experiments.straight_through
  python -m experiments.straight_through --sparsity=0 --steps=1000
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import common
from jaxnet import layers, network
from jaxnet.training import data

_STEPS = flags.DEFINE_integer("steps", 2000, "Adam steps per arm.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Examples per step.", lower_bound=2)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-2, "Adam step size.", lower_bound=0)
_HIDDEN = flags.DEFINE_integer("hidden", 64, "Width of the hidden layer.", lower_bound=1)
_SPARSITY = flags.DEFINE_float(
    "sparsity", 0.5, "Weight of the fraction of gates drawn open in the loss.", lower_bound=0
)
_NOISE = flags.DEFINE_integer(
    "noise_features", 64, "Columns of U(0, 1) noise appended to the 64 pixels.", lower_bound=0
)
_INIT_LOGIT = flags.DEFINE_float(
    "init_logit", 1.0, "Every gate's starting logit (> 0: open in eval mode).", lower_bound=0.01
)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUTPUT_DIR = common.define_path(
    "output_dir", "runs/straight_through", "Where results.json and gates.png go."
)

ARMS = ("straight_through", "autodiff_sample")
PIXELS = 64


def digits_with_noise(noise_features: int, seed: int):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], then noise columns."""
    ds = data.load("digits")
    rng = np.random.default_rng(seed)

    def widen(x):
        return np.concatenate([x / 16.0, rng.uniform(size=(len(x), noise_features))], 1)

    return (widen(ds.x_train).astype(np.float32), ds.y_train,
            widen(ds.x_test).astype(np.float32), ds.y_test)  # fmt: skip


def make_net(hidden: int, init_logit: float, *, straight_through: bool) -> layers.Layer:
    """The gated net; without straight_through, the gate has no definition (its sample)."""
    gate = layers.bernoulli_gate(init_logit=init_logit)
    gate = gate if straight_through else gate._replace(definition=None)
    return layers.serial(gate, layers.dense(hidden), layers.relu(), layers.dense(10))


def make_loss(net: layers.Layer, state, sparsity: float, *, straight_through: bool):
    """(params, x, y, key) -> cross-entropy + sparsity * fraction of gates drawn open.

    The penalty draws the gates once more, on ones, so that it too goes through the gate:
    by its hand VJP in the straight-through arm, by jax.grad of the sample in the other.
    """
    grad = "fused" if straight_through else "autodiff"
    gate_layer = make_gate_apply(straight_through)

    def loss(params, x, y, key):
        net_key, penalty_key = jax.random.split(key)
        value, _ = network.network_loss(net, params, state, x, y, loss="cross_entropy",
                                        grad=grad, train=True, key=net_key)  # fmt: skip
        drawn = gate_layer(params[0], jnp.ones_like(x), penalty_key)
        return value + sparsity * jnp.mean(drawn)

    return loss


def make_gate_apply(straight_through: bool):
    """(gate params, x, key) -> gated x in train mode, by the hand VJP or the plain sample."""
    gate = layers.bernoulli_gate()
    if straight_through:
        op = network.leaf_op(gate)
        return lambda p, x, k: op(p, {}, x, train=True, key=k)[0]
    return lambda p, x, k: gate.forward(p, {}, x, train=True, key=k)[0]


def fit(loss, params, x, y, *, steps: int, batch_size: int, learning_rate: float, key):
    """Adam on random minibatches as one jitted scan: (params, (loss, open fraction) per step)."""
    optimizer = optax.adam(learning_rate)

    def step(carry, step_key, x, y):
        params, opt_state = carry
        batch_key, gate_key = jax.random.split(step_key)
        idx = jax.random.randint(batch_key, (batch_size,), 0, x.shape[0])
        value, grads = jax.value_and_grad(loss)(params, x[idx], y[idx], gate_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (value, jnp.mean(params[0]["logits"] > 0))

    @jax.jit
    def run(params, x, y):
        carry = (params, optimizer.init(params))
        keys = jax.random.split(key, steps)
        (params, _), trace = jax.lax.scan(lambda c, k: step(c, k, x, y), carry, keys)
        return params, trace

    return run(params, x, y)


def accuracy(net, params, state, x, y) -> float:
    """Test accuracy in eval mode: each gate open where its logit is > 0."""
    out, _ = layers.apply(net, params, state, x)
    return float(jnp.mean(out.argmax(-1) == y))


def run_arm(arm: str, splits, *, seed: int, steps: int, batch_size: int, learning_rate: float,
            hidden: int, sparsity: float, init_logit: float) -> dict:  # fmt: skip
    """Trains one arm from the seed's start; its accuracy, open gates and logits."""
    x_train, y_train, x_test, y_test = splits
    straight = arm == "straight_through"
    net = make_net(hidden, init_logit, straight_through=straight)
    init_key, train_key = jax.random.split(jax.random.key(seed))
    _, params, state = net.init(init_key, x_train[:1].shape)
    start = time.perf_counter()
    trained, (losses, open_trace) = fit(
        make_loss(net, state, sparsity, straight_through=straight), params, x_train, y_train,
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, key=train_key,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    logits = np.asarray(trained[0]["logits"])
    opened = logits > 0
    return dict(
        arm=arm, test_accuracy=accuracy(net, trained, state, x_test, y_test),
        open_fraction=float(opened.mean()), open_pixels=float(opened[:PIXELS].mean()),
        open_noise=float(opened[PIXELS:].mean()) if len(opened) > PIXELS else None,
        max_logit_change=float(np.max(np.abs(logits - init_logit))),
        final_loss=float(np.mean(np.asarray(losses)[-50:])), seconds=seconds,
        logits=logits.tolist(), open_per_step=np.asarray(open_trace).tolist(),
    )  # fmt: skip


def print_table(rows: list[dict]) -> None:
    print(f"{'arm':18} {'test acc':>8} {'open':>6} {'pixels':>7} {'noise':>6} {'max |dlogit|':>13}")
    for r in rows:
        noise = "-" if r["open_noise"] is None else f"{r['open_noise']:.0%}"
        print(f"{r['arm']:18} {r['test_accuracy']:8.2%} {r['open_fraction']:6.0%} "
              f"{r['open_pixels']:7.0%} {noise:>6} {r['max_logit_change']:13.3g}")  # fmt: skip


def plot(rows: list[dict], path: str) -> str:
    """Open fraction over steps per arm, and each arm's gate probabilities on the 8x8 grid."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing: pip install -e '.[plot]' for gates.png"
    fig, axes = plt.subplots(1, 1 + len(rows), figsize=(4.5 * (1 + len(rows)), 4))
    for r in rows:
        axes[0].plot(r["open_per_step"], label=r["arm"])
    axes[0].set(xlabel="step", ylabel="fraction of gates open (eval)", ylim=(-0.05, 1.05))
    axes[0].legend(fontsize=8)
    for ax, r in zip(axes[1:], rows):
        probs = 1 / (1 + np.exp(-np.asarray(r["logits"][:PIXELS])))
        image = ax.imshow(probs.reshape(8, 8), vmin=0, vmax=1, cmap="viridis")
        noise = "" if r["open_noise"] is None else f"\nnoise gates open: {r['open_noise']:.0%}"
        ax.set_title(f"{r['arm']}: P(open) per pixel{noise}", fontsize=9)
        ax.set(xticks=[], yticks=[])
    fig.colorbar(image, ax=list(axes[1:]))
    return f"wrote {common.save_png(fig, path)}"


def main(argv):
    del argv
    common.quiet_jax_logs()
    start = time.perf_counter()
    splits = digits_with_noise(_NOISE.value, _SEED.value)
    options = dict(seed=_SEED.value, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
                   learning_rate=_LEARNING_RATE.value, hidden=_HIDDEN.value,
                   sparsity=_SPARSITY.value, init_logit=_INIT_LOGIT.value)  # fmt: skip
    rows = [run_arm(arm, splits, **options) for arm in ARMS]
    print_table(rows)
    print(plot(rows, f"{_OUTPUT_DIR.value}/gates.png"))
    results = dict(options, noise_features=_NOISE.value, arms=rows,
                   seconds=time.perf_counter() - start)  # fmt: skip
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
