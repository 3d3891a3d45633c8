r"""Lesson 003's matmul ladder: three Python loops down to one library call, timed.

Each rung is checked equal to jnp.matmul, then timed (warm-up excluded, median of
--repeats runs, block_until_ready), with and without jit, against the Python loops.

  python -m experiments.matmul_ladder                    # the lesson's 5x784 @ 784x10
  python -m experiments.matmul_ladder --shape=64,784,100 --max_loop_flops=1e6
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common
from jaxnet import timing
from jaxnet.lessons import matmul

_SHAPE = flags.DEFINE_list("shape", ["5", "784", "10"], "M,K,N for [M, K] @ [K, N].")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per rung (median).", lower_bound=1)
_MAX_LOOP_FLOPS = flags.DEFINE_float(
    "max_loop_flops", 1e5, "Skip the scalar-loop rungs above M*K*N of this.", lower_bound=0
)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/matmul_ladder", "Where results.json goes.")


def _valid_shape(values) -> bool:
    if len(values) != 3 or not all(v.isdigit() and int(v) > 0 for v in values):
        raise flags.ValidationError(f"--shape must be three positive ints M,K,N, got {values}.")
    return True


flags.register_validator("shape", _valid_shape)

SCALAR_LOOPS = ("python_loops", "fori_loops")


def ladder(m: int, k: int, n: int, *, seed: int, repeats: int, max_loop_flops: float) -> list[dict]:
    """One row per rung and jit setting: max error against jnp.matmul and median seconds."""
    a_key, b_key = jax.random.split(jax.random.key(seed))
    a, b = jax.random.normal(a_key, (m, k)), jax.random.normal(b_key, (k, n))
    want = np.asarray(jnp.matmul(a, b))
    rows = []
    for name, (fn, jit_settings) in matmul.LADDER.items():
        if name in SCALAR_LOOPS and m * k * n > max_loop_flops:
            continue
        for jitted in jit_settings:
            f = jax.jit(fn) if jitted else fn
            error = float(np.max(np.abs(np.asarray(f(a, b)) - want)))
            seconds = timing.median_seconds(f, a, b, repeats=repeats)
            rows.append(dict(rung=name, jit=jitted, max_abs_error=error, seconds=seconds))
    base = next((r["seconds"] for r in rows if r["rung"] == "python_loops"), None)
    for r in rows:
        r["speedup_vs_python_loops"] = base / r["seconds"] if base else None
    return rows


def main(argv):
    del argv
    common.quiet_jax_logs()
    m, k, n = (int(v) for v in _SHAPE.value)
    rows = ladder(m, k, n, seed=_SEED.value, repeats=_REPEATS.value,
                  max_loop_flops=_MAX_LOOP_FLOPS.value)  # fmt: skip
    print(f"[{m}, {k}] @ [{k}, {n}] on {jax.default_backend()}")
    print(f"{'rung':18} {'jit':5} {'max |err|':>10} {'median s':>11} {'speed-up':>10}")
    for r in rows:
        speedup = r["speedup_vs_python_loops"]
        print(f"{r['rung']:18} {str(r['jit']):5} {r['max_abs_error']:10.2e} {r['seconds']:11.3e} "
              f"{'' if speedup is None else f'{speedup:9.0f}x':>10}")  # fmt: skip
    results = dict(shape=[m, k, n], backend=jax.default_backend(), rows=rows)
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
