r"""Lesson 002's homework: add biases to the hand-written backward, compare with autodiff.

Batch 64, input 3, hidden 2, output 1, every parameter drawn from randn, SGD at 1e-4 for
1001 steps. The hand-written backward (jaxnet.forward_and_backward) and jax.grad start
from the same params; their loss trajectories agree to float precision.

--homework_bug reproduces the lesson's own update, `b -= learning_rate * grad_b.sum()`,
and the trajectories drift apart.

  python -m experiments.bias_homework
  python -m experiments.bias_homework --homework_bug
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import jaxnet
from experiments import common
from jaxnet.lessons import reference
from jaxnet.training import loop

_HOMEWORK_BUG = flags.DEFINE_boolean(
    "homework_bug", False, "Update each bias by the sum of its gradient over every element."
)
_STEPS = flags.DEFINE_integer("steps", 1001, "Training steps (the lesson: 1001).", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-4, "SGD step size.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/bias_homework", "Where results.json goes.")

BATCH, D_IN, HIDDEN, D_OUT = 64, 3, 2, 1

EXPLANATION = """\
Why the homework's trajectories differ: its hand-written bias gradient for the hidden
layer is grad_h_1, shaped [batch, hidden] = [64, 2], and the update b1 -= lr * grad_b1.sum()
sums it over every element, batch AND hidden units. The true gradient sums over the batch
axis only, grad_b1.sum(0), one number per hidden unit. The lesson's sum adds the two units'
gradients and gives both hidden biases that same step, so each bias moves by the wrong
amount, and the wrong way whenever the other unit's gradient is larger and of opposite
sign. For b2 the output has one unit, so sum() and sum(0) agree and that line is right by
luck. The notebook blamed Python arithmetic or autograd's rounding; it was the axis of
the sum."""


def homework_bug(grads: list[dict]) -> list[dict]:
    """The lesson's update: each bias steps by its gradient summed over every element."""
    return [{**g, "b": jnp.full_like(g["b"], jnp.sum(g["b"]))} for g in grads]


def hand_loss_and_grad(params, x, y, *, bug: bool):
    loss, grads = jaxnet.forward_and_backward(params, x, y, loss="sum_squares")
    return loss, homework_bug(grads) if bug else grads


def run(*, bug: bool, steps: int = 1001, learning_rate: float = 1e-4, seed: int = 0) -> dict:
    """Both trajectories from one start, and the largest gap between their losses."""
    keys = jax.random.split(jax.random.key(seed), 3)
    params = jaxnet.init_mlp(keys[0], [D_IN, HIDDEN, D_OUT], init="normal", bias=False)
    b_keys = jax.random.split(keys[0], len(params) + 1)[1:]  # the lesson's biases are randn too
    params = [{**p, "b": jax.random.normal(k, p["w"].shape[1:])} for p, k in zip(params, b_keys)]
    x = jax.random.normal(keys[1], (BATCH, D_IN))
    y = jax.random.normal(keys[2], (BATCH, D_OUT))
    sgd = loop.hand_sgd(learning_rate)
    hand = functools.partial(hand_loss_and_grad, bug=bug)
    auto = jax.value_and_grad(functools.partial(reference.mlp_loss, loss="sum_squares"))
    _, hand_losses = loop.fit_full_batch(hand, params, (x, y), sgd, steps)
    _, auto_losses = loop.fit_full_batch(auto, params, (x, y), sgd, steps)
    hand_losses, auto_losses = np.asarray(hand_losses), np.asarray(auto_losses)
    return dict(
        homework_bug=bug, steps=steps, learning_rate=learning_rate, seed=seed,
        hand_losses=hand_losses.tolist(), autodiff_losses=auto_losses.tolist(),
        max_abs_loss_diff=float(np.max(np.abs(hand_losses - auto_losses))),
    )  # fmt: skip


def main(argv):
    del argv
    common.quiet_jax_logs()
    results = run(bug=_HOMEWORK_BUG.value, steps=_STEPS.value,
                  learning_rate=_LEARNING_RATE.value, seed=_SEED.value)  # fmt: skip
    hand, auto = results["hand_losses"], results["autodiff_losses"]
    print(f"{'step':>5} {'hand':>12} {'jax.grad':>12} {'diff':>10}")
    for t in range(0, len(hand), 100):
        print(f"{t:5d} {hand[t]:12.6f} {auto[t]:12.6f} {hand[t] - auto[t]:10.2e}")
    print(f"max |hand - jax.grad| over all steps: {results['max_abs_loss_diff']:.3e}")
    if _HOMEWORK_BUG.value:
        print("\n" + EXPLANATION)
    else:
        print("\nThe bias gradient is summed over the batch axis only; rerun with --homework_bug")
        print("to reproduce the lesson's update and see the two trajectories drift apart.")
    results["explanation"] = EXPLANATION
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
