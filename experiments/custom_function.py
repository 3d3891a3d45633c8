r"""Lesson 001's "Defining new autograd functions", as jax.custom_vjp.

1. MyReLU, saving its input as the lesson's ctx.save_for_backward does, in the
   64x1000 -> 100 -> 10 net: its gradient checked against jax.grad, then 500 SGD steps.
2. The current PyTorch tutorial's version: fit sin(x) on [-pi, pi] with
   y = a + b * P3(c + d x), P3(x) = (5x^3 - 3x) / 2 the Legendre polynomial as a custom VJP.

  python -m experiments.custom_function
"""

import functools
import math

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.flatten_util import ravel_pytree

import jaxnet
from experiments import common
from jaxnet import gradcheck
from jaxnet.lessons import reference
from jaxnet.training import loop

_RELU_STEPS = flags.DEFINE_integer(
    "relu_steps", 500, "SGD steps for the MyReLU net.", lower_bound=1
)
_LEGENDRE_STEPS = flags.DEFINE_integer("legendre_steps", 2000, "SGD steps for P3.", lower_bound=1)
_LEGENDRE_LR = flags.DEFINE_float("legendre_learning_rate", 5e-6, "SGD step for P3.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/custom_function", "Where results.json goes.")


@jax.custom_vjp
def my_relu(x):
    """The lesson's MyReLU: input.clamp(min=0)."""
    return jnp.maximum(x, 0)


def _my_relu_fwd(x):
    return my_relu(x), x  # the lesson keeps the input (ctx.save_for_backward(input))


def _my_relu_bwd(x, g):
    # grad_input = grad_output.clone(); grad_input[input < 0] = 0. At exactly 0 the lesson
    # passes the gradient through; jax.nn.relu and jaxnet.ops.relu give 0 there.
    return (jnp.where(x < 0, 0, g),)


my_relu.defvjp(_my_relu_fwd, _my_relu_bwd)


@jax.custom_vjp
def legendre_p3(x):
    """P3(x) = (5x^3 - 3x) / 2."""
    return 0.5 * (5 * x**3 - 3 * x)


def _legendre_p3_fwd(x):
    return legendre_p3(x), x


def _legendre_p3_bwd(x, g):
    # dP3/dx = (15x^2 - 3) / 2 = 1.5 (5x^2 - 1)
    return (g * 1.5 * (5 * x**2 - 1),)


legendre_p3.defvjp(_legendre_p3_fwd, _legendre_p3_bwd)


def two_layer_loss(params, x, y, relu=my_relu):
    """The lesson's net: relu(x @ w1) @ w2, sum of squares."""
    return jnp.sum(jnp.square(relu(x @ params[0]["w"]) @ params[1]["w"] - y))


def my_relu_net(seed: int, steps: int) -> dict:
    keys = jax.random.split(jax.random.key(seed), 3)
    params = jaxnet.init_mlp(keys[0], [1000, 100, 10], init="normal", bias=False)
    x, y = jax.random.normal(keys[1], (64, 1000)), jax.random.normal(keys[2], (64, 10))
    got = jax.jit(jax.grad(two_layer_loss))(params, x, y)
    want = jax.grad(functools.partial(reference.mlp_loss, loss="sum_squares"))(params, x, y)
    # float32 tolerances scaled to each leaf: its gradients reach ~1e4, where rounding
    # that depends on the processor's summation order exceeds any fixed atol
    report = gradcheck.compare(got, want)
    loss_and_grad = jax.value_and_grad(two_layer_loss)
    _, losses = loop.fit_full_batch(loss_and_grad, params, (x, y), loop.hand_sgd(1e-6), steps)
    return dict(gradient_check=str(report), gradient_ok=report.ok,
                max_rel_diff=max(leaf.max_rel for leaf in report.leaves),
                losses=jax.device_get(losses).tolist())  # fmt: skip


def legendre_model(coeffs, x):
    return coeffs["a"] + coeffs["b"] * legendre_p3(coeffs["c"] + coeffs["d"] * x)


def legendre_loss(coeffs, x, y):
    return jnp.sum(jnp.square(legendre_model(coeffs, x) - y))


def legendre_loss_plain(coeffs, x, y):
    """The same loss with P3 written out, for jax.grad to differentiate."""
    z = coeffs["c"] + coeffs["d"] * x
    return jnp.sum(jnp.square(coeffs["a"] + coeffs["b"] * 0.5 * (5 * z**3 - 3 * z) - y))


def polynomial(c: dict) -> str:
    return f"y = {c['a']:.4g} + {c['b']:.4g} * P3({c['c']:.4g} + {c['d']:.4g} x)"


def legendre_fit(steps: int, learning_rate: float) -> dict:
    """The tutorial's fit: 2000 points, start (a, b, c, d) = (0, -1, 0, 0.3)."""
    x = jnp.linspace(-math.pi, math.pi, 2000)
    y = jnp.sin(x)
    coeffs = {"a": 0.0, "b": -1.0, "c": 0.0, "d": 0.3}
    coeffs = jax.tree_util.tree_map(jnp.float32, coeffs)
    # At the start dL/dc is 0 by symmetry; float32 sums over 2000 points leave ~1e-4 there,
    # rounding at the scale of the largest coefficient's gradient (~7e3): compared as one
    # vector [a, b, c, d], the tolerance scales with that.
    got = ravel_pytree(jax.grad(legendre_loss)(coeffs, x, y))[0]
    report = gradcheck.compare(got, ravel_pytree(jax.grad(legendre_loss_plain)(coeffs, x, y))[0])
    loss_and_grad = jax.value_and_grad(legendre_loss)
    sgd = loop.hand_sgd(learning_rate)
    final, losses = loop.fit_full_batch(loss_and_grad, coeffs, (x, y), sgd, steps)
    final = {k: float(v) for k, v in final.items()}
    return dict(coefficients=final, losses=jax.device_get(losses).tolist(), gradient_ok=report.ok,
                gradient_check=str(report),
                polynomial=polynomial(final))  # fmt: skip


def main(argv):
    del argv
    common.quiet_jax_logs()
    relu = my_relu_net(_SEED.value, _RELU_STEPS.value)
    print("MyReLU as jax.custom_vjp, gradient against jax.grad of the plain net:")
    print(relu["gradient_check"])
    for t in range(99, len(relu["losses"]), 100):
        print(t, relu["losses"][t])
    fit = legendre_fit(_LEGENDRE_STEPS.value, _LEGENDRE_LR.value)
    print("\nLegendre P3 as jax.custom_vjp, gradient against jax.grad of the expanded formula:")
    print(fit["gradient_check"])
    for t in range(99, len(fit["losses"]), 400):
        print(t, fit["losses"][t])
    print(f"Result: {fit['polynomial']}, final loss {fit['losses'][-1]:.4f}")
    results = dict(my_relu=relu, legendre=fit)
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
