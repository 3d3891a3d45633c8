r"""Time per new shape of gradcheck.check against jax.test_util.check_grads, and a hypothesis run.

First, check_layer on the README's PReLU at (8, 20), as a user's first call in a process
(every compile included): correct, then with its backward's factor x forgotten (a new
function: it compiles again), each against check_grads of the same hand VJP. Then every
shape is new to both (each compiles afresh), and the two run in turn on the same
function and arguments, in one process: a layernorm and a GELU from jaxnet.layers, their
hand VJP as one custom_vjp, in float32. Then a hypothesis test over --hypothesis_shapes
shapes of the layernorm, as a user writes it with jaxnet.testing.

  python -m benchmarks.gradcheck_speed
  python -m benchmarks.gradcheck_speed --shapes=3 --hypothesis_shapes=20 \
      --output_dir=benchmarks/results
"""

import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from hypothesis import assume, given, settings
from jax.test_util import check_grads

from experiments import common
from jaxnet import gradcheck, testing
from jaxnet import layers as L
from jaxnet.gradcheck import _layer as layer_check
from jaxnet.gradcheck._report import table
from jaxnet.training import files

_SHAPES = flags.DEFINE_integer("shapes", 3, "New shapes per layer and order.", lower_bound=1)
_HYPOTHESIS_SHAPES = flags.DEFINE_integer("hypothesis_shapes", 20, "Hypothesis examples.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmarks/results", "Where the JSON goes.")

LAYERS = {"layer_norm": L.layer_norm, "gelu": L.gelu}


def prelu(forget_x: bool = False) -> L.Layer:
    """The README's PReLU; forget_x plants its bug (dy/da without the factor x)."""

    def init(key, input_shape, dtype=jnp.float32):
        return input_shape, {"a": jnp.full(input_shape[-1:], 0.25, dtype)}, {}

    def forward(params, state, x, *, train=False, key=None):
        return jnp.where(x > 0, x, params["a"] * x), x, state

    def backward(params, x, g):
        # y = x (x > 0) or a x: dy/dx = 1 or a; dy/da = 0 or x, summed over the batch
        da = jnp.sum(jnp.where(x > 0, 0, g if forget_x else g * x), axis=0)
        return {"a": da}, jnp.where(x > 0, g, params["a"] * g)

    return L.Layer(init, forward, backward, "prelu")


def _problem(make, batch, features):
    """(hand f, reference, args) for a layer in eval mode at a new shape."""
    layer = make()
    _, params, state = layer.init(jax.random.key(batch), (batch, features))
    params = layer_check.away_from_zero(jax.random.key(1), params)
    x = jax.random.normal(jax.random.key(2), (batch, features))
    f = layer_check.hand_vjp(layer, state, train=False)
    return f, layer_check.autodiff_reference(layer, state, train=False), (params, x)


def _seconds(call, *args, **kwargs) -> tuple[float, bool]:
    start = time.perf_counter()
    try:
        jax.block_until_ready(call(*args, **kwargs))
        ok = True
    except AssertionError:  # check_grads in float32 at order 2 may miss its tolerance
        ok = False
    return time.perf_counter() - start, ok


def check_layer_times(shape=(8, 20)) -> dict:
    """Seconds of check_layer on the PReLU, passing then failing, and of check_grads."""
    ok_s, passed = _seconds(gradcheck.check_layer, prelu(), shape)
    fail_s, failed = _seconds(gradcheck.check_layer, prelu(forget_x=True), shape)
    f, _, args = _problem(prelu, *shape)
    theirs, _ = _seconds(check_grads, f, args, order=2, modes=["rev"])
    return {"shape": list(shape), "passing_s": ok_s, "failing_s": fail_s,
            "check_grads_s": theirs, "ratio": ok_s / theirs,
            "verdicts_right": passed and not failed}  # fmt: skip


def time_per_shape(name: str, order: int, shapes: int) -> dict:
    """Median seconds per new shape: check(order) and check_grads(order, modes=["rev"])."""
    ours, theirs, passed = [], [], []
    for i in range(shapes):
        f, ref, args = _problem(LAYERS[name], 3 + i, 10 + 3 * order + i)
        t, _ = _seconds(gradcheck.check, f, ref, *args, order=order)
        ours.append(t)
        t, ok = _seconds(check_grads, f, args, order=order, modes=["rev"])
        theirs.append(t)
        passed.append(ok)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    return {"layer": name, "order": order, "check_s": ours_s, "check_grads_s": theirs_s,
            "ratio": ours_s / theirs_s, "check_grads_passed": all(passed)}  # fmt: skip


def hypothesis_run(examples: int) -> dict:
    """Seconds of a hypothesis test over `examples` distinct layernorm shapes (README's)."""
    seen = set()
    f_ln = layer_check.hand_vjp(L.layer_norm(), {}, train=False)
    ref = layer_check.autodiff_reference(L.layer_norm(), {}, train=False)

    @settings(deadline=None, max_examples=examples, database=None)
    @given(x=testing.arrays(testing.shapes(min_dims=2, max_dims=2, min_side=3, max_side=40)))
    def test_layernorm(x):
        assume(x.shape not in seen)  # every example a new shape: each one compiles
        seen.add(x.shape)
        params = {"scale": 1.0 + 0.1 * x[0], "bias": 0.1 * x[-1]}
        testing.assert_vjp_correct(f_ln, ref, params, x)

    start = time.perf_counter()
    test_layernorm()
    seconds = time.perf_counter() - start
    return {"examples": examples, "distinct_shapes": len(seen), "seconds": seconds,
            "shapes_per_second": len(seen) / seconds}  # fmt: skip


def main(argv):
    del argv
    common.quiet_jax_logs()
    layer = check_layer_times()  # first: every compile counts, as in a user's first call
    rows = [time_per_shape(n, o, _SHAPES.value) for o in (1, 2) for n in LAYERS]
    hyp = hypothesis_run(_HYPOTHESIS_SHAPES.value)
    header = ["layer", "order", "check s/shape", "check_grads s/shape", "ratio", "cg passed"]
    body = [[r["layer"], str(r["order"]), f"{r['check_s']:.2f}", f"{r['check_grads_s']:.2f}",
             f"{r['ratio']:.2f}", str(r["check_grads_passed"])] for r in rows]  # fmt: skip
    print(f"check_layer(prelu(), {tuple(layer['shape'])}), first call: "
          f"{layer['passing_s']:.2f} s passing, {layer['failing_s']:.2f} s failing "
          f"(check_grads, order 2: {layer['check_grads_s']:.2f} s); "
          f"verdicts right: {layer['verdicts_right']}")  # fmt: skip
    print(table(header, body))
    shapes, seconds = hyp["distinct_shapes"], hyp["seconds"]
    print(f"hypothesis: {hyp['examples']} examples, {shapes} distinct layernorm shapes in "
          f"{seconds:.1f} s ({shapes / seconds:.2f} shapes/s)")  # fmt: skip
    results = {"check_layer": layer, "per_shape": rows, "hypothesis": hyp, "jax": jax.__version__,
               "machine": platform.platform(), "cpus": jax.device_count()}  # fmt: skip
    print(files.write_json_atomic(f"{_OUTPUT_DIR.value}/gradcheck_speed.json", results))


if __name__ == "__main__":
    app.run(main)
