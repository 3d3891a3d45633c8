"""The benchmark's `layers` section: three networks built from `jaxnet.layers`, each gradient
step timed against the same network written by hand in jax.numpy and differentiated by
`jax.grad` (jaxnet.lessons.reference).

Per network, five jitted `value_and_grad` programs on the same arrays: "fused", "ops" and
"jaxnet_autodiff" (`network_loss(grad=...)`), "plain" (jax.grad of the hand-written
network) and "floor" (the step's matrix products alone). Timing: paired, interleaved
rounds (`jaxnet.timing.interleaved_times`), each round's time divided by the plain time of
the same round, reported as the median ratio with its quartiles and range. Memory: the
residuals saved for the backward beyond the arguments (`saved_residuals`). Work: the
compiled program's kernels by kind (`jaxnet.profiling.kernel_counts`), among them the
"large passes" that read or write a whole batch x hidden array, and whether its
matrix products are exactly the plain program's (`jaxnet.profiling.dot_signatures`).

This module holds no flags, so tests import it; benchmarks/benchmark.py runs it.
"""

import statistics

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.ad_checkpoint import saved_residuals

import jaxnet
from jaxnet import layers, profiling, timing
from jaxnet.lessons import reference

ARCHITECTURES = ("relu_mlp", "bn_tanh", "ln_gelu")
DEFAULT_HIDDEN = {"relu_mlp": (800, 800), "bn_tanh": (512, 512), "ln_gelu": (512, 512)}
INPUTS, CLASSES = 784, 10
MODES = ("fused", "plain", "ops", "jaxnet_autodiff", "floor")  # fused and plain run adjacent
# Targets of the layers issue, reported and not asserted.
TIME_MEDIAN, TIME_EACH = 1.03, 1.05
RESIDUAL_TARGET = {"relu_mlp": 0.6, "bn_tanh": 0.67, "ln_gelu": 0.67}


def network(arch: str, hidden) -> tuple[layers.Layer, object]:
    """(net, plain loss) for an architecture: relu_mlp (dense, relu), bn_tanh (dense with no
    bias, batch_norm, tanh: a bias before batch_norm is cancelled by its mean) or ln_gelu
    (dense, layer_norm, gelu) blocks, then dense(CLASSES)."""
    block = {
        "relu_mlp": lambda n: (layers.dense(n), layers.relu()),
        "bn_tanh": lambda n: (layers.dense(n, bias=False), layers.batch_norm(), layers.tanh()),
        "ln_gelu": lambda n: (layers.dense(n), layers.layer_norm(), layers.gelu()),
    }[arch]
    net = layers.serial(*[layer for n in hidden for layer in block(n)], layers.dense(CLASSES))
    loss = {"relu_mlp": reference.relu_net_loss, "bn_tanh": reference.bn_tanh_net_loss,
            "ln_gelu": reference.ln_gelu_net_loss}[arch]  # fmt: skip
    return net, loss


def problem(arch: str, hidden, batch: int, seed: int = 0):
    """(net, plain loss, (params, state, x, y)) with params away from their init."""
    net, loss = network(arch, hidden)
    keys = jax.random.split(jax.random.key(seed), 4)
    _, params, state = net.init(keys[0], (batch, INPUTS))
    # Every parameter moved by its own noise, so that no term of the backward vanishes.
    leaves, treedef = jax.tree.flatten(params)
    noise = jax.random.split(keys[3], len(leaves))
    params = treedef.unflatten(
        [p * (1 + 0.1 * jax.random.normal(k, p.shape, p.dtype)) for p, k in zip(leaves, noise)]
    )
    x = jax.random.normal(keys[1], (batch, INPUTS))
    y = jax.random.randint(keys[2], (batch,), 0, CLASSES)
    return net, loss, (params, state, x, y)


def gemm_floor(weights, x, g_out):
    """The matrix products of one step and nothing else: x @ w forward, then dW = a^T g and
    (except for the data) dX = g w^T backward."""
    acts = [x]
    for w in weights[:-1]:
        acts.append(acts[-1] @ w)
    outs, g = [acts[-1] @ weights[-1]], g_out
    for i in reversed(range(len(weights))):
        outs.append(acts[i].T @ g)
        if i > 0:
            g = g @ weights[i].T
    return outs


def losses_by_mode(net, plain_loss):
    """{mode: (params, state, x, y) -> (loss, new_state)} for every mode but the floor."""

    def jaxnet_loss(grad):
        return lambda p, s, x, y: jaxnet.network_loss(net, p, s, x, y, loss="cross_entropy",
                                                      grad=grad)  # fmt: skip

    return {"fused": jaxnet_loss("fused"), "plain": plain_loss, "ops": jaxnet_loss("ops"),
            "jaxnet_autodiff": jaxnet_loss("autodiff")}  # fmt: skip


def programs(net, plain_loss, args):
    """{mode: (jitted, args)}: a jitted value_and_grad per mode, and the floor."""
    out = {
        mode: (jax.jit(jax.value_and_grad(f, has_aux=True)), args)
        for mode, f in losses_by_mode(net, plain_loss).items()
    }
    weights = [p["w"] for p in args[0] if "w" in p]
    out["floor"] = (jax.jit(gemm_floor), (weights, args[2], jnp.ones((len(args[2]), CLASSES))))
    return out


def check_same_step(progs, rtol=1e-4, atol=1e-5) -> None:
    """Raises unless every mode's loss, new state and gradients are plain's: a timing
    against a network that computes something else would mean nothing."""
    f, args = progs["plain"]
    want = f(*args)
    for mode in ("fused", "ops", "jaxnet_autodiff"):
        got = progs[mode][0](*progs[mode][1])
        close = jax.tree.map(lambda a, b: bool(np.allclose(a, b, rtol, atol)), got, want)
        if not all(jax.tree.leaves(close)):
            raise AssertionError(f"{mode} and plain differ: {close}")


def residual_bytes(f, args) -> int:
    """Bytes of the residuals f's backward keeps, beyond its arguments."""
    saved = [a for a, why in saved_residuals(f, *args) if "argument" not in why]
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in saved))


def measure(arch: str, hidden, batch: int, rounds: int) -> dict:
    """One architecture's rows: time (ms, ratio to plain), residual bytes, kernels, products."""
    net, plain_loss, args = problem(arch, hidden, batch)
    progs = programs(net, plain_loss, args)
    check_same_step(progs)
    texts = {m: f.lower(*a).compile().as_text() for m, (f, a) in progs.items()}
    times = timing.interleaved_times(
        {m: (lambda f=f, a=a: f(*a)) for m, (f, a) in progs.items()}, repeats=rounds
    )
    residuals = {m: residual_bytes(f, args) for m, f in losses_by_mode(net, plain_loss).items()}
    plain_dots = profiling.dot_signatures(texts["plain"])
    rows = []
    for mode in MODES:
        dots = profiling.dot_signatures(texts[mode])
        rows.append(dict(
            mode=mode, ms=1e3 * statistics.median(times[mode]),
            vs_plain=timing.ratio_spread(times[mode], times["plain"]),
            residual_bytes=residuals.get(mode),
            residuals_vs_plain=residuals[mode] / residuals["plain"] if mode in residuals else None,
            kernels=profiling.kernel_counts(texts[mode], large=batch * min(hidden)),
            dots=len(dots),
            same_dots_as_plain=dots == plain_dots,
        ))  # fmt: skip
    sizes = [INPUTS, *hidden, CLASSES]
    return {"arch": arch, "sizes": sizes, "batch": batch, "rounds": rounds, "rows": rows,
            "plain_dots": [list(d) for d in plain_dots]}  # fmt: skip


def targets(results: list[dict]) -> dict:
    """The issue's targets beside what was measured: {name: (measured, target, met)}, in
    the order to report them."""
    fused = {r["arch"]: next(row for row in r["rows"] if row["mode"] == "fused") for r in results}
    time = {a: row["vs_plain"]["median"] for a, row in fused.items()}
    out = {"fused/plain time, median over the networks": statistics.median(time.values())}
    out = {k: (v, TIME_MEDIAN, v <= TIME_MEDIAN) for k, v in out.items()}
    for arch, row in fused.items():
        out[f"fused/plain time, {arch}"] = (time[arch], TIME_EACH, time[arch] <= TIME_EACH)
        ratio, target = row["residuals_vs_plain"], RESIDUAL_TARGET[arch]
        out[f"fused/plain residual bytes, {arch}"] = (ratio, target, ratio <= target)
        out[f"fused computes the plain program's {row['dots']} matrix products, {arch}"] = (
            row["same_dots_as_plain"], True, row["same_dots_as_plain"])  # fmt: skip
    return out


def section(rounds: int, batch: int = 512, hidden=None, architectures=ARCHITECTURES) -> dict:
    """The section's results: {"networks": [per architecture], "targets": [[name, measured,
    target, met], ...]} (a list, since benchmark.json sorts the keys of a dict).

    Args:
      rounds: paired rounds per network.
      batch: examples per step.
      hidden: hidden widths for every network; default DEFAULT_HIDDEN.
      architectures: which of ARCHITECTURES to run.
    """
    results = [measure(a, hidden or DEFAULT_HIDDEN[a], batch, rounds) for a in architectures]
    return {"networks": results, "targets": [[k, *v] for k, v in targets(results).items()]}


KERNELS = ("matmul", "elementwise", "reduce", "gather", "copy", "large passes")


def table(results: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the section's markdown table."""
    header = [
        "network",
        "mode",
        "ms",
        "/plain median [q1, q3] (min-max)",
        "residual bytes",
        "res/plain",
        *(f"{k} kernels" for k in KERNELS[:-1]),
        "passes over batch x hidden",
        "dots",
        "dots = plain's",
    ]
    rows = []
    for net in results["networks"]:
        name = f"{net['arch']} {'-'.join(map(str, net['sizes']))} b{net['batch']}"
        for r in net["rows"]:
            s = r["vs_plain"]
            rows.append([
                name, r["mode"], f"{r['ms']:.2f}",
                f"{s['median']:.3f} [{s['q1']:.3f}, {s['q3']:.3f}] ({s['min']:.2f}-{s['max']:.2f})",
                "" if r["residual_bytes"] is None else str(r["residual_bytes"]),
                "" if r["residuals_vs_plain"] is None else f"{r['residuals_vs_plain']:.3f}",
                *(str(r["kernels"].get(k, 0)) for k in KERNELS), str(r["dots"]),
                "yes" if r["same_dots_as_plain"] else "no",
            ])  # fmt: skip
    return header, rows


def target_lines(results: dict) -> list[str]:
    """One line per target: measured, target, met or missed."""
    lines = []
    for name, value, target, met in results["targets"]:
        shown = f"{value:.3f} (target <= {target})" if not isinstance(value, bool) else value
        lines.append(f"- {name}: {shown}: {'met' if met else 'MISSED'}")
    return lines


def work_lines(results: dict) -> list[str]:
    """Per network, where the hand backward does less work than plain autodiff."""
    lines = []
    for net in results["networks"]:
        rows = {r["mode"]: r for r in net["rows"]}
        fused, plain_ = ({**rows[m]["kernels"], "MB": rows[m]["residual_bytes"] / 2**20}
                         for m in ("fused", "plain"))  # fmt: skip
        pairs = [f"{what} {fused[k]:.4g} vs {plain_[k]:.4g}" for what, k in (
            ("passes over batch x hidden arrays", "large passes"),
            ("elementwise kernels", "elementwise"), ("reductions", "reduce"),
            ("residual MB", "MB"))]  # fmt: skip
        lines.append(f"- {net['arch']}, fused vs plain: " + "; ".join(pairs))
    return lines
