r"""Lesson 001's "Control Flow + Weight Sharing": a middle layer reused 0 to 3 times.

Each step draws its repeat count from the PRNG; `lax.switch` picks the branch, so the
whole training run stays one jitted `lax.scan`. Reusing a layer k times is an MLP whose k
middle layers share one set of params: its gradient is the sum of the k per-use
gradients. The hand-derived path (jaxnet.forward_and_backward on the unrolled layers,
then that sum) is checked against jax.grad for every repeat count, then trained with SGD
plus momentum.

  python -m experiments.dynamic_net
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import jaxnet
from experiments import common
from jaxnet import gradcheck
from jaxnet.lessons import reference

_STEPS = flags.DEFINE_integer("steps", 500, "Training steps.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-4, "SGD step size.", lower_bound=0)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0, upper_bound=1)
_GRAD = flags.DEFINE_enum("grad", "hand", ["hand", "autodiff"], "Which gradient trains.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/dynamic_net", "Where results.json goes.")

N, D_IN, H, D_OUT = 64, 1000, 100, 10
MAX_REPEATS = 3


def init(key) -> dict:
    """{"in", "mid", "out"}: the input layer, the shared middle layer, the output layer."""
    layers = jaxnet.init_mlp(key, [D_IN, H, H, D_OUT], init="torch_default")
    return dict(zip(("in", "mid", "out"), layers))


def unroll(params: dict, repeats: int) -> list[dict]:
    """The MLP that reuses the middle layer `repeats` times."""
    return [params["in"], *[params["mid"]] * repeats, params["out"]]


def fold(grads: list[dict], repeats: int, like: dict) -> dict:
    """Per-layer gradients of the unrolled MLP back onto the shared params: shared uses add."""
    mid = jax.tree_util.tree_map(jnp.zeros_like, like["mid"])
    for g in grads[1 : 1 + repeats]:
        mid = jax.tree_util.tree_map(jnp.add, mid, g)
    return {"in": grads[0], "mid": mid, "out": grads[-1]}


def hand_loss_and_grad(params, x, y, repeats):
    """The hand-derived path, with no JAX autodiff: one lax.switch branch per repeat count."""

    def branch(k):
        def f(params):
            loss, grads = jaxnet.forward_and_backward(unroll(params, k), x, y, loss="sum_squares")
            return loss, fold(grads, k, params)

        return f

    return jax.lax.switch(repeats, [branch(k) for k in range(MAX_REPEATS + 1)], params)


def plain_loss(params, x, y, repeats):
    """The same net in plain jax.numpy, for jax.grad; lax.switch picks the repeat count."""

    def branch(k):
        return lambda params: reference.mlp_loss(unroll(params, k), x, y, loss="sum_squares")

    return jax.lax.switch(repeats, [branch(k) for k in range(MAX_REPEATS + 1)], params)


autodiff_loss_and_grad = jax.value_and_grad(plain_loss)


def check_every_repeat_count(params, x, y) -> list[dict]:
    """Hand against jax.grad for repeats 0..3; one row each."""
    rows = []
    for k in range(MAX_REPEATS + 1):
        hand = jax.jit(hand_loss_and_grad)(params, x, y, k)
        auto = jax.jit(autodiff_loss_and_grad)(params, x, y, k)
        report = gradcheck.compare(hand[1], auto[1], rtol=1e-4, atol=1e-4)
        rows.append(dict(repeats=k, ok=report.ok, loss=float(hand[0]),
                         max_rel_diff=max(leaf.max_rel for leaf in report.leaves)))  # fmt: skip
    return rows


def fit(params, x, y, repeats, *, grad: str, learning_rate: float, momentum: float):
    """Trains with SGD plus momentum; repeats[t] is step t's repeat count."""
    loss_and_grad = hand_loss_and_grad if grad == "hand" else autodiff_loss_and_grad
    optimizer = optax.sgd(learning_rate, momentum=momentum)

    @jax.jit
    def run(params, repeats):
        def step(carry, k):
            params, opt_state = carry
            loss, grads = loss_and_grad(params, x, y, k)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, (params, optimizer.init(params)), repeats)[1]

    return run(params, repeats)


def run(*, steps: int, learning_rate: float, momentum: float, grad: str, seed: int) -> dict:
    keys = jax.random.split(jax.random.key(seed), 4)
    params = init(keys[0])
    x, y = jax.random.normal(keys[1], (N, D_IN)), jax.random.normal(keys[2], (N, D_OUT))
    checks = check_every_repeat_count(params, x, y)
    repeats = jax.random.randint(keys[3], (steps,), 0, MAX_REPEATS + 1)
    losses = fit(params, x, y, repeats, grad=grad, learning_rate=learning_rate, momentum=momentum)
    losses = np.asarray(losses)
    return dict(checks=checks, repeats=np.asarray(repeats).tolist(), losses=losses.tolist(),
                first_loss=float(losses[0]), final_loss=float(losses[-1]))  # fmt: skip


def main(argv):
    del argv
    common.quiet_jax_logs()
    results = run(steps=_STEPS.value, learning_rate=_LEARNING_RATE.value,
                  momentum=_MOMENTUM.value, grad=_GRAD.value, seed=_SEED.value)  # fmt: skip
    print("hand-derived VJP against jax.grad, per repeat count of the shared layer:")
    for row in results["checks"]:
        print(f"  repeats={row['repeats']}  loss {row['loss']:.4f}  max rel diff "
              f"{row['max_rel_diff']:.2e}  {'ok' if row['ok'] else 'MISMATCH'}")  # fmt: skip
    for t in range(99, _STEPS.value, 100):
        print(t, results["repeats"][t], results["losses"][t])
    print(f"loss {results['first_loss']:.4f} -> {results['final_loss']:.4f}")
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
