r"""The GPT's training step: jaxnet's hand VJP against what a user would otherwise write.

One step as `jaxnet.training.lm` takes it: the value and gradient of the mean next-token
cross-entropy, then nanoGPT's AdamW with clipping (`lm.optimizer`) and `optax.apply_updates`,
all in one `jax.jit` with the params and optimizer state donated. The sides differ only in
the gradient:

  fused     jaxnet.network_loss(jaxnet.gpt.gpt(...), ..., grad="fused"): the whole VJP
            written by hand, one jax.custom_vjp.
  plain     jax.value_and_grad of reference.nanogpt_loss: the same model, as nanoGPT's
            model.py writes it, in plain jax.numpy (the same params pytree).
  autodiff  (--modes) network_loss(..., grad="autodiff"): jax.grad through jaxnet's layers.

Configurations: "nanogpt_cpu", nanoGPT's CPU settings (vocab 113, 4 layers, 4 heads, width
128, block 64, batch 12), and "long", the same at block 1024 and batch 4. The ids are
random (no corpus): the time of a step does not depend on them.

Time is --rounds paired, interleaved rounds in one process, the order alternating each
round (`jaxnet.timing.interleaved_times`); the speedup is the median of the per-round
ratios plain / mode, with its quartiles. Memory is the compiled program's temporary bytes
(`memory_analysis().temp_size_in_bytes`), of the value-and-gradient alone and of the whole
step. The gradients of each side at the same params are compared with plain's, leaf by
leaf, each difference scaled by the leaf's largest magnitude.

  python -m benchmarks.gpt_bench
  python -m benchmarks.gpt_bench --configs=nanogpt_cpu --modes=fused,plain,autodiff --rounds=60
"""

import dataclasses
import functools
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
import optax
from absl import app, flags

import jaxnet
from benchmarks.memory_bench import worst_leaf
from experiments import common
from jaxnet import gpt, losses, timing
from jaxnet.lessons import reference
from jaxnet.training import files, lm


@dataclasses.dataclass(frozen=True)
class Config:
    """A GPT and its batch: ids [batch, block_size] over vocab."""

    vocab: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch: int


NANOGPT_CPU = Config(vocab=113, n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12)
CONFIGS = {
    "nanogpt_cpu": NANOGPT_CPU,
    "long": dataclasses.replace(NANOGPT_CPU, block_size=1024, batch=4),
}
MODES = ("fused", "plain", "autodiff")
TARGET_SPEEDUP = 1.3  # nanogpt_cpu: plain / fused step time, at least
MIB = 2**20

_ROUNDS = flags.DEFINE_integer("rounds", 30, "Paired rounds for nanogpt_cpu.", lower_bound=1)
_LONG_ROUNDS = flags.DEFINE_integer("long_rounds", 6, "Paired rounds for long.", lower_bound=1)
_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), f"Which of {list(CONFIGS)} to run.")
_MODES = flags.DEFINE_list("modes", ["fused", "plain"], f"Which of {list(MODES)}; plain needed.")
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/gpt.json", "Where the JSON goes.")

flags.register_validator("configs", lambda v: set(v) <= set(CONFIGS),
                         f"choose from {list(CONFIGS)}")  # fmt: skip
flags.register_validator("modes", lambda v: "plain" in v and set(v) <= set(MODES),
                         f"choose from {list(MODES)}, plain among them")  # fmt: skip


# -------------------------------------------------------------------------- the sides


def problem(config: Config, compiler_options=None):
    """(net, params, state, x, y, optimizer): nanoGPT's init, random ids, lm's AdamW."""
    net = gpt.gpt(config.vocab, n_layer=config.n_layer, n_head=config.n_head,
                  n_embd=config.n_embd, block_size=config.block_size)  # fmt: skip
    shape = (config.batch, config.block_size)
    init = jax.jit(lambda key: net.init(key, shape)[1:], compiler_options=compiler_options)
    params, state = init(jax.random.key(0))  # one program, not one per op and shape
    # numpy's generator: a jax.random draw would compile a program of its own
    rng = np.random.default_rng(0)
    windows = rng.integers(0, config.vocab, (config.batch, config.block_size + 1), np.int32)
    opt = lm.optimizer(lm.GPTConfig(n_layer=config.n_layer, n_head=config.n_head,
                                    n_embd=config.n_embd, block_size=config.block_size,
                                    batch_size=config.batch))  # fmt: skip
    return net, params, state, windows[:, :-1], windows[:, 1:], opt


def losses_of(net, state, heads: int, modes=MODES) -> dict:
    """{mode: (params, x, y) -> (loss, state)} for each side."""
    rule = losses.cross_entropy()

    def jaxnet_loss(grad):
        return lambda p, x, y: jaxnet.network_loss(net, p, state, x, y, loss=rule, grad=grad)

    def plain(p, x, y):
        return reference.nanogpt_loss(p, state, x, y, heads=heads)

    return {m: plain if m == "plain" else jaxnet_loss(m) for m in modes}


def train_step(loss, opt):
    """(params, opt_state, x, y) -> (params, opt_state, loss): one AdamW step, as lm's."""
    value_and_grad = jax.value_and_grad(loss, has_aux=True)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y):
        (value, _), grads = value_and_grad(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def compiled(jitted, *args, compiler_options=None):
    """The compiled program, compiled once: called for the times, read for the memory.
    compiler_options: XLA's (a test's faster compile); None for the benchmark."""
    return jitted.lower(*args).compile(compiler_options=compiler_options)


def temp_bytes(program) -> int:
    return int(program.memory_analysis().temp_size_in_bytes)


def stepper(step, params, opt_state, x, y):
    """A zero-argument call taking one training step from copies of params and opt_state,
    and carrying them on (each step's donated buffers are the next step's inputs)."""
    carry = jax.tree.map(lambda a: jax.device_put(np.array(a)), (params, opt_state))

    def call():
        nonlocal carry
        *carry, value = step(*carry, x, y)
        return carry, value

    return call


# ---------------------------------------------------------------------------- measure


def measure(config: Config, rounds: int, modes=("fused", "plain"), compiler_options=None):
    """Times, temp bytes and gradient agreement of each mode's step at one configuration."""
    load_before = os.getloadavg()
    net, params, state, x, y, opt = problem(config, compiler_options)
    opt_state = opt.init(params)
    grad, step = {}, {}
    for m, f in losses_of(net, state, config.n_head, modes).items():
        value_and_grad = jax.jit(jax.value_and_grad(f, has_aux=True))
        grad[m] = compiled(value_and_grad, params, x, y, compiler_options=compiler_options)
        step[m] = compiled(train_step(f, opt), params, opt_state, x, y,
                           compiler_options=compiler_options)  # fmt: skip
    want = grad["plain"](params, x, y)[1]
    times = timing.interleaved_times(
        {m: stepper(s, params, opt_state, x, y) for m, s in step.items()}, repeats=rounds
    )
    rows = {}
    for m in modes:
        diff, leaf = worst_leaf(grad[m](params, x, y)[1], want)
        rows[m] = {"ms": 1e3 * statistics.median(times[m]),
                   "speedup_vs_plain": timing.ratio_spread(times["plain"], times[m]),
                   "grad_temp_bytes": temp_bytes(grad[m]), "step_temp_bytes": temp_bytes(step[m]),
                   "max_rel_grad_diff_vs_plain": diff, "worst_leaf": leaf}  # fmt: skip
    return {"config": dataclasses.asdict(config), "rounds": rounds, "modes": rows,
            "parameters": gpt.count_parameters(params),
            "load_average": {"before": load_before, "after": os.getloadavg()}}  # fmt: skip


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "backend": jax.default_backend(), "devices": jax.device_count(),
            "jax": jax.__version__, "optax": optax.__version__}  # fmt: skip


def targets(results: dict) -> list[list]:
    """[name, measured, target, met] for each target whose configuration and modes ran."""
    rows = results["configs"].get("nanogpt_cpu", {}).get("modes", {})
    if "fused" not in rows:
        return []
    speedup = rows["fused"]["speedup_vs_plain"]["median"]
    name = "nanogpt_cpu: plain / fused step time, median of paired rounds"
    return [[name, speedup, TARGET_SPEEDUP, speedup >= TARGET_SPEEDUP]]


def run(configs: dict, rounds: dict, modes, compiler_options=None) -> dict:
    """Every configuration measured in turn, the machine, and the targets."""
    results = {"machine": machine(), "load_average": {"before": os.getloadavg()}}
    results["configs"] = {name: measure(c, rounds[name], modes, compiler_options)
                          for name, c in configs.items()}  # fmt: skip
    results["load_average"]["after"] = os.getloadavg()
    results["targets"] = targets(results)
    return results


# ----------------------------------------------------------------------------- report


def _spread(s: dict) -> str:
    return f"{s['median']:.3f} [{s['q1']:.3f}, {s['q3']:.3f}]"


def table(results: dict) -> str:
    """One markdown row per configuration and mode."""
    header = ["config", "mode", "ms / step", "plain / mode [q1, q3]", "grad temp MiB",
              "step temp MiB", "grad diff vs plain (worst leaf)"]  # fmt: skip
    rows = [
        [name, mode, f"{r['ms']:.1f}", _spread(r["speedup_vs_plain"]),
         f"{r['grad_temp_bytes'] / MIB:.1f}", f"{r['step_temp_bytes'] / MIB:.1f}",
         "" if mode == "plain" else f"{r['max_rel_grad_diff_vs_plain']:.1e} {r['worst_leaf']}"]
        for name, c in results["configs"].items() for mode, r in c["modes"].items()
    ]  # fmt: skip
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def target_lines(results: dict) -> list[str]:
    return [f"{'PASS' if met else 'FAIL'}: {name}: {value:.3f} (target >= {target:g})"
            for name, value, target, met in results["targets"]]  # fmt: skip


def main(argv):
    del argv
    common.quiet_jax_logs()
    configs = {name: CONFIGS[name] for name in _CONFIGS.value}
    rounds = {"nanogpt_cpu": _ROUNDS.value, "long": _LONG_ROUNDS.value}
    start = time.perf_counter()
    results = run(configs, rounds, _MODES.value)
    results["seconds"] = time.perf_counter() - start
    results["command"] = "python -m benchmarks.gpt_bench " + " ".join(sys.argv[1:])
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    m, load = results["machine"], results["load_average"]
    print(f"{m['backend']} with {m['cpus']} CPUs, jax {m['jax']}; load average "
          f"{load['before'][0]:.1f} before, {load['after'][0]:.1f} after")  # fmt: skip
    print(table(results))
    print("\n".join(target_lines(results)))
    print(f"wrote {files.write_json_atomic(_OUTPUT.value, results)} in {results['seconds']:.0f}s")


if __name__ == "__main__":
    app.run(main)
