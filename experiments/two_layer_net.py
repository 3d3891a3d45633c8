r"""Lesson 001's two-layer net: 64 x 1000 -> 100 -> 10 on random data, sum-of-squares loss.

Prints `<step> <loss>` at steps 99, 199, ..., 499 as the lesson does. Every --grad mode
starts from the same seed and prints the same trajectory:

  python -m experiments.two_layer_net --grad=manual     # forward_and_backward + hand SGD
  python -m experiments.two_layer_net --grad=fused      # one custom_vjp for the network
  python -m experiments.two_layer_net --grad=ops        # per-op custom_vjps composed
  python -m experiments.two_layer_net --grad=autodiff   # jax.grad of plain jax.numpy
  python -m experiments.two_layer_net --optimizer=adam  # lesson 001's optim section
"""

import functools
import time

import jax
from absl import app, flags

import jaxnet
from experiments import common
from jaxnet.training import loop

_GRAD = flags.DEFINE_enum(
    "grad",
    "manual",
    ["manual", "fused", "ops", "autodiff"],
    "manual: forward_and_backward plus a hand-written update (the lesson's numpy code); "
    "fused/ops/autodiff: jax.grad of jaxnet.mlp_loss(grad=...).",
)
_OPTIMIZER = flags.DEFINE_string(
    "optimizer", "sgd", f"sgd, adam, or another optax optimizer: {', '.join(loop.OPTIMIZERS)}."
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", None, "Step size; default 1e-6 for sgd, 1e-4 otherwise (as the lesson).",
    lower_bound=0.0,
)  # fmt: skip
_STEPS = flags.DEFINE_integer("steps", 500, "Training steps.", lower_bound=1)
_PRINT_EVERY = flags.DEFINE_integer(
    "print_every", 100, "Print the loss every N steps.", lower_bound=1
)
_BIAS = flags.DEFINE_boolean("bias", False, "Give both layers a bias (the lesson has none).")
_INIT = flags.DEFINE_enum(
    "init", None, sorted(jaxnet.initializers.INITIALIZERS),
    "Weight init; default normal (the lesson's randn) for sgd, torch_default (the lesson's "
    "torch.nn.Linear) for other optimizers.",
)  # fmt: skip
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed for data and weights.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "Floating dtype.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/two_layer_net", "Where results.json goes.")

N, D_IN, H, D_OUT = 64, 1000, 100, 10


def _is_optimizer(name: str) -> bool:
    try:
        loop.make_optimizer(name, 1e-3)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


flags.register_validator("optimizer", _is_optimizer)


def default_learning_rate(optimizer: str) -> float:
    """The lesson's step sizes: 1e-6 for plain SGD on randn weights, 1e-4 for Adam."""
    return 1e-6 if optimizer == "sgd" else 1e-4


def default_init(optimizer: str) -> str:
    """The lesson trains randn weights with SGD and torch.nn.Linear weights with Adam."""
    return "normal" if optimizer == "sgd" else "torch_default"


def _loss_and_grad(grad: str):
    if grad == "manual":
        return functools.partial(jaxnet.forward_and_backward, loss="sum_squares")
    loss = functools.partial(jaxnet.mlp_loss, loss="sum_squares", grad=grad)
    return jax.value_and_grad(loss)


def run(
    *,
    grad: str = "manual",
    optimizer: str = "sgd",
    learning_rate: float | None = None,
    steps: int = 500,
    bias: bool = False,
    init: str | None = None,
    seed: int = 0,
    dtype: str = "float32",
) -> dict:
    """Trains the lesson's net and returns the losses of every step with the settings."""
    learning_rate = default_learning_rate(optimizer) if learning_rate is None else learning_rate
    init = default_init(optimizer) if init is None else init
    if grad == "manual" and optimizer == "sgd":
        opt = loop.hand_sgd(learning_rate)
    else:
        opt = loop.make_optimizer(optimizer, learning_rate)
    init_key, x_key, y_key = jax.random.split(jax.random.key(seed), 3)
    params = jaxnet.init_mlp(init_key, [D_IN, H, D_OUT], init=init, bias=bias, dtype=dtype)
    x = jax.random.normal(x_key, (N, D_IN), dtype)
    y = jax.random.normal(y_key, (N, D_OUT), dtype)
    start = time.perf_counter()
    _, losses = loop.fit_full_batch(_loss_and_grad(grad), params, (x, y), opt, steps)
    losses = jax.device_get(losses).tolist()
    settings = dict(grad=grad, optimizer=optimizer, learning_rate=learning_rate, steps=steps,
                    bias=bias, init=init, seed=seed, dtype=dtype)  # fmt: skip
    return {
        "settings": settings,
        "losses": losses,
        "final_loss": losses[-1],
        "seconds": time.perf_counter() - start,
        "backend": jax.default_backend(),
    }


def printed_steps(steps: int, every: int) -> list[int]:
    """Steps 99, 199, ... as the lesson prints them, and always the last one."""
    marks = [t for t in range(steps) if t % every == every - 1]
    return marks if marks and marks[-1] == steps - 1 else [*marks, steps - 1]


def main(argv):
    del argv
    common.quiet_jax_logs()
    if _DTYPE.value == "float64":
        jax.config.update("jax_enable_x64", True)
    results = run(
        grad=_GRAD.value, optimizer=_OPTIMIZER.value, learning_rate=_LEARNING_RATE.value,
        steps=_STEPS.value, bias=_BIAS.value, init=_INIT.value, seed=_SEED.value,
        dtype=_DTYPE.value,
    )  # fmt: skip
    for t in printed_steps(_STEPS.value, _PRINT_EVERY.value):
        print(t, results["losses"][t])
    path = common.write_results(_OUTPUT_DIR.value, results)
    print(f"# {results['settings']} in {results['seconds']:.2f}s; wrote {path}")


if __name__ == "__main__":
    app.run(main)
