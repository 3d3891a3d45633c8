r"""Lessons 000 and 003: how the init scale makes activations explode, vanish, or hold.

One layer: mean and std after `lin` and after `relu`, per scheme, for inputs of std 1.
Deep chains: lesson 000's 50 layers of 100 and fast.ai's 100 layers of 512, with and
without ReLU: each chain's verdict (holds, explodes, vanishes, overflows, underflows, see
`jaxnet.lessons.stats.verdict`), the layer where it showed, and the final moments.

  python -m experiments.init_stats
  python -m experiments.init_stats --batch=64 --chains=50x100
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common
from jaxnet import initializers
from jaxnet.lessons import stats

_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_BATCH = flags.DEFINE_integer(
    "batch", 200, "Rows of the input batch (the lesson: 200).", lower_bound=1
)
_CHAINS = flags.DEFINE_list(
    "chains",
    ["50x100", "100x512"],
    "Deep chains as DEPTHxWIDTH (lesson 000: 50x100; fast.ai: 100x512).",
)
_PLOT = flags.DEFINE_boolean("plot", True, "Write std_per_layer.png (needs matplotlib).")
_OUTPUT_DIR = common.define_path("output_dir", "runs/init_stats", "Where results.json goes.")

SINGLE_LAYER = ("normal", "lecun_normal", "glorot_normal", "glorot_uniform", "kaiming_normal",
                "kaiming_uniform", "torch_default")  # fmt: skip
CHAIN_SCHEMES = ("normal", "fixed_0.1", "lecun_normal", "glorot_normal", "kaiming_normal",
                 "torch_default", "lsuv")  # fmt: skip


def _parse_chain(text: str) -> tuple[int, int]:
    depth, sep, width = text.partition("x")
    if not (sep and depth.isdigit() and width.isdigit() and int(depth) > 0 and int(width) > 0):
        raise flags.ValidationError(f"--chains entry {text!r} must be DEPTHxWIDTH, e.g. 50x100.")
    return int(depth), int(width)


flags.register_validator("chains", lambda v: all(_parse_chain(c) for c in v) and bool(v))


def single_layer(key, batch: int, fan_in: int = 100, fan_out: int = 50) -> list[dict]:
    """Lesson 003's table: x [batch, 100] of std 1 through a 100 -> 50 layer, then ReLU."""
    x_key, w_key = jax.random.split(key)
    x = jax.random.normal(x_key, (batch, fan_in))
    rows = []
    for name in SINGLE_LAYER:
        h = x @ initializers.get(name)(w_key, (fan_in, fan_out))
        lin, relu = stats.moments(h), stats.moments(jnp.maximum(h, 0))
        rows.append(dict(scheme=name, lin_mean=lin.mean, lin_std=lin.std,
                         relu_mean=relu.mean, relu_std=relu.std))  # fmt: skip
    return rows


def _chain_init(name: str):
    return stats.fixed_scale(0.1) if name == "fixed_0.1" else initializers.get(name)


def _weights(key, name: str, x, depth: int, width: int, relu: bool):
    if name != "lsuv":
        return stats.chain_weights(key, _chain_init(name), depth, width)
    params = [{"w": w} for w in stats.chain_weights(key, initializers.normal, depth, width)]
    activation = jax.nn.relu if relu else (lambda h: h)
    params = initializers.lsuv(params, x, key=key, activation=activation)
    return jnp.stack([layer["w"] for layer in params])


def deep_chain(key, batch: int, depth: int, width: int, relu: bool) -> list[dict]:
    """One row per scheme: where the chain first fails, and its final mean and std."""
    x_key, w_key = jax.random.split(key)
    x = jax.random.normal(x_key, (batch, width))
    rows = []
    for name in CHAIN_SCHEMES:
        weights = _weights(w_key, name, x, depth, width, relu)
        means, stds = stats.chain_stds(x, weights, relu=relu)
        verdict = stats.verdict(stds)
        rows.append(dict(scheme=name, depth=depth, width=width, relu=relu,
                         verdict=verdict.verdict, layer=verdict.layer,
                         final_mean=float(means[-1]), final_std=verdict.final_std,
                         std_per_layer=np.asarray(stds, np.float64).tolist()))  # fmt: skip
    return rows


VERDICT_LEGEND = """\
verdict: holds = final std in [0.1, 10]; explodes / vanishes = final std above 10 / below
0.1, at the first layer past the bound; overflows = inf or nan, underflows = std exactly 0,
at the first layer where it happened."""


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def print_tables(single: list[dict], chains: list[dict]) -> None:
    print(f"{'scheme':16} {'lin mean':>10} {'lin std':>10} {'relu mean':>10} {'relu std':>10}")
    for r in single:
        print(f"{r['scheme']:16} " + " ".join(f"{_fmt(r[k]):>10}" for k in
              ("lin_mean", "lin_std", "relu_mean", "relu_std")))  # fmt: skip
    print(f"\n{'chain':10} {'relu':5} {'scheme':15} {'verdict':10} {'at layer':>8} "
          f"{'final mean':>11} {'final std':>11}")  # fmt: skip
    for r in chains:
        chain, layer = f"{r['depth']}x{r['width']}", "" if r["layer"] is None else r["layer"]
        print(f"{chain:10} {str(r['relu']):5} {r['scheme']:15} {r['verdict']:10} {layer:>8} "
              f"{_fmt(r['final_mean']):>11} {_fmt(r['final_std']):>11}")  # fmt: skip
    print(VERDICT_LEGEND)


def plot(chains: list[dict], path: str) -> str:
    """Activation std per layer per scheme, one panel per chain; returns what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing: pip install -e '.[plot]' for std_per_layer.png"
    panels = sorted({(r["depth"], r["width"], r["relu"]) for r in chains})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (depth, width, relu) in zip(axes[0], panels):
        for r in chains:
            if (r["depth"], r["width"], r["relu"]) == (depth, width, relu):
                stds = np.clip(
                    np.nan_to_num(r["std_per_layer"], nan=1e38, posinf=1e38), 1e-38, 1e38
                )
                ax.semilogy(range(1, depth + 1), stds, label=r["scheme"])
        ax.set(
            title=f"{depth}x{width}, {'ReLU' if relu else 'linear'}", xlabel="layer", ylabel="std"
        )
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return f"wrote {common.save_png(fig, path)}"


def main(argv):
    del argv
    common.quiet_jax_logs()
    single_key, chain_key = jax.random.split(jax.random.key(_SEED.value))
    single = single_layer(single_key, _BATCH.value)
    chains = []
    for text in _CHAINS.value:
        for relu in (False, True):
            chains += deep_chain(chain_key, _BATCH.value, *_parse_chain(text), relu)
    print_tables(single, chains)
    print("\nsqrt(2/n) for n=100:", math.sqrt(2 / 100), "(kaiming keeps a ReLU chain's scale)")
    if _PLOT.value:
        print(plot(chains, f"{_OUTPUT_DIR.value}/std_per_layer.png"))
    results = dict(seed=_SEED.value, batch=_BATCH.value, single_layer=single, chains=chains)
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
