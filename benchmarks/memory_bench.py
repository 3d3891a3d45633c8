"""The benchmark's `memory` section beyond the MLPs: where a hand backward does less than
autodiff can. Attention that recomputes its probabilities (`jaxnet.ops.dot_product_attention`),
a GPT block stack built on it, and a reversible stack that rebuilds its activations.

Memory is the compiled gradient program's temporary bytes (`jax.jit(jax.grad(loss)).lower(
...).compile().memory_analysis().temp_size_in_bytes`, no donation): deterministic, so every
memory target is a hard number. Time is paired, interleaved rounds in one process, the order
alternating each round (`jaxnet.timing.interleaved_times`), reported as the median of the
per-round ratios with its quartiles.

  attention   batch 1, one head, head dim 64, float32, gradient of sum(out * w) in q, k, v:
              "hand" (jaxnet.ops), "jax_nn" (jax.grad of jax.nn.dot_product_attention),
              "naive" (jax.grad of softmax(q k^T) v written out), "checkpointed_scan"
              (jax.grad of an online-softmax lax.scan over key blocks, jax.checkpoint per
              block: the best a user can do with autodiff).
  gpt         embedding, position_embedding, residual(layer_norm, dense(3C), attention(4),
              dense(C)), residual(layer_norm, dense(4C), gelu, dense(C)), layer_norm,
              dense(vocab); C=128, batch 4, vocab 113, cross-entropy: "fused"
              (network_loss) against "plain" (jax.grad of reference.gpt_loss).
  reversible  batch 256, width 512, blocks of f, g = serial(dense(256), gelu(), dense(256,
              init=N(0, 0.02))): "fused" against "autodiff" (jax.grad of the plain forward).

This module holds no flags, so tests import it; benchmarks/benchmark.py runs it.
"""

import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import jaxnet
from jaxnet import layers, ops, timing
from jaxnet.lessons import reference

MIB = 2**20
HEAD_DIM, SCAN_BLOCK = 64, 128
ATTENTION_MODES = ("hand", "jax_nn", "naive", "checkpointed_scan")
CURVE_LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
GPT = dict(width=128, batch=4, vocab=113, heads=4)
REV = dict(batch=256, width=512)
DEPTHS = (8, 16, 32, 64)


# ---------------------------------------------------------------------------- attention


def naive_attention(q, k, v, *, is_causal):
    """softmax(q k^T / sqrt(D)) v per head, the whole T x T at once."""
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if is_causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


def checkpointed_attention(q, k, v, *, is_causal, block=SCAN_BLOCK):
    """The online softmax as a lax.scan over key blocks, each step under jax.checkpoint.

    Reverse mode stores the carry (every query's running output) at every step, and the
    causal blocks above the diagonal cannot be skipped: a trip count that depends on the
    query block is not reverse-differentiable, so they are masked.
    """
    b, t, h, d = q.shape
    rows = jnp.arange(t)[:, None]

    @jax.checkpoint
    def step(carry, j):
        m, z, acc = carry
        k_j, v_j = (jax.lax.dynamic_slice_in_dim(x, j * block, block, 1) for x in (k, v))
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k_j) / np.sqrt(d)
        if is_causal:
            s = jnp.where(j * block + jnp.arange(block) <= rows, s, -1e30)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        p, rescale = jnp.exp(s - m_new[..., None]), jnp.exp(m - m_new)
        acc = rescale[..., None] * acc + jnp.einsum("bhqk,bkhd->bhqd", p, v_j)
        return (m_new, rescale * z + jnp.sum(p, axis=-1), acc), None

    start = (jnp.full((b, h, t), -1e30), jnp.zeros((b, h, t)), jnp.zeros((b, h, t, d)))
    (_, z, acc), _ = jax.lax.scan(step, start, jnp.arange(t // block))
    return jnp.transpose(acc / z[..., None], (0, 2, 1, 3))


def attention_grads(is_causal: bool) -> dict:
    """{mode: jitted (q, k, v, w) -> (dq, dk, dv)} of sum(attention(q, k, v) * w)."""
    fns = {
        "hand": ops.dot_product_attention,
        "jax_nn": jax.nn.dot_product_attention,
        "naive": naive_attention,
        "checkpointed_scan": checkpointed_attention,
    }

    def grad(f):
        loss = lambda q, k, v, w: jnp.sum(f(q, k, v, is_causal=is_causal) * w)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    return {mode: grad(f) for mode, f in fns.items()}


def _attention_args(length: int, concrete: bool):
    shape = (1, length, 1, HEAD_DIM)
    if not concrete:
        return [jax.ShapeDtypeStruct(shape, jnp.float32)] * 4
    return [jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(0), 4)]


def temp_bytes(jitted, *args) -> int:
    """The compiled program's temporary bytes (compiles, does not run)."""
    return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def _paired(calls: dict, base: str, rounds: int) -> dict:
    """{name: {"ms", "vs_<base>"}} from paired interleaved rounds."""
    times = timing.interleaved_times(calls, repeats=rounds)
    return {
        name: {"ms": 1e3 * statistics.median(t), f"vs_{base}": timing.ratio_spread(t, times[base])}
        for name, t in times.items()
    }


def worst_leaf(got, want) -> tuple[float, str]:
    """(max over leaves of max |got - want| / max |want|, the leaf's path), in numpy (each
    shape would compile its own jax ops)."""

    def diff(path, g, w):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        return float(np.max(np.abs(g - w)) / np.max(np.abs(w))), jax.tree_util.keystr(path)

    diffs = jax.tree_util.tree_map_with_path(diff, got, want)
    return max(jax.tree.leaves(diffs, is_leaf=lambda d: isinstance(d, tuple)))


def _same(got, want) -> float:
    """max over leaves of max |got - want| / max |want|."""
    return worst_leaf(got, want)[0]


def _repeated(f, args, calls: int):
    """A zero-argument call running f(*args) `calls` times (a short call alone is mostly
    the timer's and the dispatcher's noise)."""

    def call():
        for _ in range(calls - 1):
            f(*args)
        return f(*args)

    return call


def attention_timed(length: int, is_causal: bool, rounds: int, modes=ATTENTION_MODES,
                    calls: int = 1) -> dict:  # fmt: skip
    """Temp bytes and paired times (ms per call) of each mode at one length, and how far
    hand's gradients are from jax_nn's."""
    grads = {m: f for m, f in attention_grads(is_causal).items() if m in modes}
    args = _attention_args(length, concrete=True)
    want = grads["jax_nn"](*args)  # every mode must compute the same gradients
    times = _paired({m: _repeated(f, args, calls) for m, f in grads.items()}, "jax_nn", rounds)
    modes = {
        m: {
            "temp_bytes": temp_bytes(f, *args),
            **times[m],
            "max_rel_diff_vs_jax_nn": _same(f(*args), want),
        }
        for m, f in grads.items()
    }
    for row in modes.values():
        row["ms"] /= calls
    return {"T": length, "causal": is_causal, "calls_per_round": calls, "modes": modes}


def attention_curve(lengths=CURVE_LENGTHS) -> list[dict]:
    """Causal temp bytes of every mode against T (compile only)."""
    grads = attention_grads(True)
    return [{"T": t, **{m: temp_bytes(f, *_attention_args(t, False)) for m, f in grads.items()}}
            for t in lengths]  # fmt: skip


# ---------------------------------------------------------------------------------- gpt


def gpt(length: int) -> layers.Layer:
    """The GPT of reference.gpt_loss, on jaxnet.layers."""
    c, heads, vocab = GPT["width"], GPT["heads"], GPT["vocab"]
    return layers.serial(
        layers.embedding(vocab, c),
        layers.position_embedding(length),
        layers.residual(layers.layer_norm(), layers.dense(3 * c), layers.attention(heads),
                        layers.dense(c)),
        layers.residual(layers.layer_norm(), layers.dense(4 * c), layers.gelu(), layers.dense(c)),
        layers.layer_norm(),
        layers.dense(vocab),
    )  # fmt: skip


def gpt_grads(length: int):
    """({"fused", "plain"}: jitted params -> grads, params): next-token cross-entropy."""
    net = gpt(length)
    ids = jax.random.randint(jax.random.key(1), (GPT["batch"], length), 0, GPT["vocab"])
    labels = jnp.roll(ids, -1, axis=1)
    _, params, state = net.init(jax.random.key(0), ids.shape)

    def fused(p):
        return jaxnet.network_loss(net, p, state, ids, labels, loss="cross_entropy")[0]

    def plain(p):
        return reference.gpt_loss(p, state, ids, labels, heads=GPT["heads"])[0]

    return {"fused": jax.jit(jax.grad(fused)), "plain": jax.jit(jax.grad(plain))}, params


def gpt_row(length: int, rounds: int | None) -> dict:
    """Temp bytes of fused and plain; with rounds, their paired times and agreement."""
    grads, params = gpt_grads(length)
    row = {"T": length, **{f"{m}_temp_bytes": temp_bytes(f, params) for m, f in grads.items()}}
    if rounds:
        row["max_rel_diff_vs_plain"] = _same(grads["fused"](params), grads["plain"](params))
        calls = {m: functools.partial(f, params) for m, f in grads.items()}
        row["times"] = _paired(calls, "plain", rounds)
    return row


# --------------------------------------------------------------------------- reversible


def small(key, shape, dtype=jnp.float32):
    """N(0, 0.02^2): blocks near the identity, which float32 can rebuild through."""
    return 0.02 * jax.random.normal(key, shape, dtype)


def reversible_net(depth: int) -> layers.Layer:
    half = REV["width"] // 2

    def branch():
        return layers.serial(layers.dense(half), layers.gelu(), layers.dense(half, init=small))

    return layers.reversible(*[(branch(), branch()) for _ in range(depth)])


def reversible_grads(depth: int, dtype=jnp.float32):
    """({"fused", "autodiff"}: jitted params -> grads of sum(net(x) * w), params)."""
    net = reversible_net(depth)
    shape = (REV["batch"], REV["width"])
    _, params, state = net.init(jax.random.key(0), shape, dtype)
    x, w = (jax.random.normal(k, shape, dtype) for k in jax.random.split(jax.random.key(1)))

    def grad(mode):
        f = jaxnet.network_fn(net, grad=mode, train=False)
        return jax.jit(jax.grad(lambda p: jnp.sum(f(p, state, x)[0] * w)))

    return {"fused": grad("fused"), "autodiff": grad("autodiff")}, params


def _per_leaf_error(grads, params) -> float:
    return _same(grads["fused"](params), grads["autodiff"](params))


def reversible_rows(rounds: int, depths=DEPTHS, timed_depth: int = 32) -> list[dict]:
    rows = []
    for depth in depths:
        grads, params = reversible_grads(depth)
        row = {"depth": depth, **{f"{m}_temp_bytes": temp_bytes(f, params)
                                  for m, f in grads.items()}}  # fmt: skip
        if depth == timed_depth:
            row["max_rel_diff_float32"] = _per_leaf_error(grads, params)
            row["times"] = _paired({m: functools.partial(f, params) for m, f in grads.items()},
                                   "autodiff", rounds)  # fmt: skip
            with jax.enable_x64(True):
                row["max_rel_diff_float64"] = _per_leaf_error(*reversible_grads(depth, jnp.float64))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ section


def section(rounds: int) -> dict:
    """Every measurement of this module, and the targets beside them."""
    results = {
        "attention": [
            attention_timed(2048, True, rounds),
            attention_timed(128, True, rounds, modes=("hand", "jax_nn"), calls=50),
            attention_timed(2048, False, rounds, modes=("hand", "jax_nn")),
        ],
        "attention_curve": attention_curve(),
        "gpt": [gpt_row(1024, rounds), gpt_row(2048, None)],
        "reversible": reversible_rows(rounds),
    }
    results["targets"] = [[k, *v] for k, v in targets(results).items()]
    return results


def _at(rows, **where):
    return next(r for r in rows if all(r[k] == v for k, v in where.items()))


def targets(results: dict) -> dict:
    """{name: (measured, target, met)} for every target of the issue, in report order."""
    out = {}

    def add(name, value, target):
        out[name] = (value, target, value <= target)

    causal = _at(results["attention"], T=2048, causal=True)["modes"]
    curve8k = _at(results["attention_curve"], T=8192)
    add("attention T=2048 causal: hand temp MiB", causal["hand"]["temp_bytes"] / MIB, 2.0)
    add(
        "attention T=2048 causal: hand / checkpointed_scan temp",
        causal["hand"]["temp_bytes"] / causal["checkpointed_scan"]["temp_bytes"],
        0.25,
    )
    add("attention T=2048 causal: hand / jax_nn time", causal["hand"]["vs_jax_nn"]["median"], 0.6)
    add("attention T=8192 causal (compile only): hand temp MiB", curve8k["hand"] / MIB, 8.0)
    short = _at(results["attention"], T=128)["modes"]["hand"]["vs_jax_nn"]["median"]
    add("attention T=128 causal: hand / jax_nn time", short, 1.2)
    full = _at(results["attention"], T=2048, causal=False)["modes"]["hand"]
    add("attention T=2048 non-causal: hand / jax_nn time", full["vs_jax_nn"]["median"], 1.0)
    g1, g2 = (_at(results["gpt"], T=t) for t in (1024, 2048))
    add("gpt T=1024: fused / plain temp", g1["fused_temp_bytes"] / g1["plain_temp_bytes"], 0.25)
    add("gpt T=1024: fused / plain time", g1["times"]["fused"]["vs_plain"]["median"], 0.8)
    add(
        "gpt T=2048 (compile only): fused / plain temp",
        g2["fused_temp_bytes"] / g2["plain_temp_bytes"],
        0.15,
    )
    rev = {r["depth"]: r for r in results["reversible"]}
    temps = [r["fused_temp_bytes"] for r in rev.values()]
    add("reversible depth 8..64: fused temp max / min - 1", max(temps) / min(temps) - 1, 0.10)
    r32 = rev[32]
    add(
        "reversible 32 blocks: fused / autodiff temp",
        r32["fused_temp_bytes"] / r32["autodiff_temp_bytes"],
        0.1,
    )
    add(
        "reversible 32 blocks: fused / autodiff time",
        r32["times"]["fused"]["vs_autodiff"]["median"],
        1.25,
    )
    add(
        "reversible 32 blocks: float32 grads, max per leaf |fused - autodiff| / max|autodiff|",
        r32["max_rel_diff_float32"],
        1e-4,
    )
    add("reversible 32 blocks: float64 grads, the same", r32["max_rel_diff_float64"], 1e-9)
    return out  # fmt: skip


# ------------------------------------------------------------------------------- report


def _ratio(spread: dict) -> str:
    return f"{spread['median']:.3f} [{spread['q1']:.3f}, {spread['q3']:.3f}]"


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the section's markdown tables."""
    attention = [
        [str(r["T"]), "causal" if r["causal"] else "full", mode, f"{m['temp_bytes'] / MIB:.2f}",
         f"{m['ms']:.2f}", _ratio(m["vs_jax_nn"]), f"{m['max_rel_diff_vs_jax_nn']:.1e}"]
        for r in results["attention"] for mode, m in r["modes"].items()
    ]  # fmt: skip
    curve = [[str(r["T"]), *(f"{r[m] / MIB:.2f}" for m in ATTENTION_MODES)]
             for r in results["attention_curve"]]  # fmt: skip
    gpt_rows = []
    for r in results["gpt"]:
        ratio = r["fused_temp_bytes"] / r["plain_temp_bytes"]
        times = r.get("times")
        gpt_rows.append([str(r["T"]), f"{r['fused_temp_bytes'] / MIB:.1f}",
                         f"{r['plain_temp_bytes'] / MIB:.1f}", f"{ratio:.3f}",
                         f"{times['fused']['ms']:.1f}" if times else "compile only",
                         f"{times['plain']['ms']:.1f}" if times else "",
                         _ratio(times["fused"]["vs_plain"]) if times else "",
                         f"{r['max_rel_diff_vs_plain']:.1e}" if times else ""])  # fmt: skip
    rev_rows = [
        [str(r["depth"]), f"{r['fused_temp_bytes'] / MIB:.2f}",
         f"{r['autodiff_temp_bytes'] / MIB:.2f}",
         f"{r['fused_temp_bytes'] / r['autodiff_temp_bytes']:.3f}",
         _ratio(r["times"]["fused"]["vs_autodiff"]) if "times" in r else "",
         f"{r['max_rel_diff_float32']:.1e}" if "times" in r else ""]
        for r in results["reversible"]
    ]  # fmt: skip
    return [
        ("attention gradient, batch 1, one head, head dim 64, float32 (temp MiB; time ms, "
         "ratio to jax_nn: median [q1, q3] of paired rounds)",
         ["T", "mask", "mode", "temp MiB", "ms", "/jax_nn", "grad diff vs jax_nn"], attention),
        ("attention gradient temp MiB against T, causal (compile only)",
         ["T", *ATTENTION_MODES], curve),
        (f"GPT block stack, C={GPT['width']}, batch {GPT['batch']}, vocab {GPT['vocab']}: "
         "fused network_loss against jax.grad of the plain jax.numpy GPT",
         ["T", "fused MiB", "plain MiB", "fused/plain temp", "fused ms", "plain ms",
          "fused/plain time", "grad diff vs plain"], gpt_rows),
        (f"reversible stack, batch {REV['batch']}, width {REV['width']}: fused against "
         "autodiff (jax.grad of the plain forward)",
         ["blocks", "fused MiB", "autodiff MiB", "fused/autodiff temp", "fused/autodiff time",
          "max rel grad diff (float32)"], rev_rows),
    ]  # fmt: skip


def target_lines(results: dict) -> list[str]:
    """One line per target: measured, target, met or missed."""
    return [
        f"- {name}: {value:.4g} (target <= {target:g}): {'met' if met else 'MISSED'}"
        for name, value, target, met in results["targets"]
    ]


def plot(results: dict, path) -> str:
    """memory.png: attention temp against T, reversible temp against depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments import common

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    curve = results["attention_curve"]
    lengths = [r["T"] for r in curve]
    styles = {"hand": "o-", "jax_nn": "s-", "naive": "x--", "checkpointed_scan": "^-"}
    for mode in ATTENTION_MODES:
        left.loglog(lengths, [r[mode] / MIB for r in curve], styles[mode], label=mode, base=2)
    left.set(title="causal attention gradient, 1 head, D=64", xlabel="T",
             ylabel="compiled temp MiB")  # fmt: skip
    left.legend(fontsize=8)
    rev = results["reversible"]
    depths = [r["depth"] for r in rev]
    for mode in ("fused", "autodiff"):
        right.plot(depths, [r[f"{mode}_temp_bytes"] / MIB for r in rev], "o-", label=mode)
    right.set(title=f"reversible stack, batch {REV['batch']}, width {REV['width']}",
              xlabel="blocks", ylabel="compiled temp MiB")  # fmt: skip
    right.legend(fontsize=8)
    fig.tight_layout()
    return common.save_png(fig, path)
