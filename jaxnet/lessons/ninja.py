"""Makemore part 4, "becoming a backprop ninja": the character MLP's gradients by hand.

The net (Bengio et al. 2003, as makemore builds it), for a batch of n contexts:

    emb = C[x]                                   [n, block, d]    embedding lookup
    embcat = emb.reshape(n, -1)                  [n, block * d]
    hprebn = embcat @ W1                         [n, hidden]      no bias: batch norm removes it
    bnmeani = mean(hprebn, 0)                    [1, hidden]
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff ** 2
    bnvar = sum(bndiff2, 0) / n                  biased, as jaxnet.layers.batch_norm and
                                                 PyTorch normalise; the lecture divides by n - 1
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = tanh(hpreact)
    logits = h @ W2 + b2                         [n, 27]
    logit_maxes = max(logits, 1)                 [n, 1]           for stability only
    norm_logits = logits - logit_maxes
    counts = exp(norm_logits)
    counts_sum = sum(counts, 1)                  [n, 1]
    counts_sum_inv = counts_sum ** -1
    probs = counts * counts_sum_inv
    logprobs = log(probs)
    loss = -mean(logprobs[range(n), y])

`forward` computes every line, each intermediate plus a `tap` of zeros, so that `jax.grad`
with respect to the taps is the gradient of the loss with respect to that intermediate.
`backward` walks back line by line, as the lecture's exercise 1; `cross_entropy_backward`
(exercise 2) and `batch_norm_backward` (exercise 3) are the fused one-liners.

`bessel=True` is the lecture's own batch norm (variance over n - 1): it changes `bnvar`'s
line and, in the backward, `dbndiff2`'s 1/(n - 1) and the n/(n - 1) of the one-liner's last
term. Nothing else differs.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.typing import Array, ArrayLike

EPS = 1e-5
# The lecture's order: from the loss back to the embedding table.
ORDER = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits",
    "logit_maxes", "logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw",
    "bnvar_inv", "bnvar", "bndiff2", "bndiff", "bnmeani", "hprebn", "embcat", "W1", "emb", "C",
)  # fmt: skip
PARAMS = ("C", "W1", "W2", "b2", "bngain", "bnbias")
INTERMEDIATES = tuple(name for name in ORDER if name not in PARAMS)


@functools.partial(
    jax.jit, static_argnames=("vocab", "block_size", "embedding_dim", "hidden", "dtype")
)
def init_params(
    key: ArrayLike,
    *,
    vocab: int,
    block_size: int,
    embedding_dim: int,
    hidden: int,
    dtype=jnp.float32,
) -> dict[str, Array]:
    """The lecture's parameters, deliberately away from zero (a zero b2 can hide a bug).

    W1 has tanh's kaiming gain 5/3; W2 and b2 are small; bngain and bnbias are 1 and 0 plus
    noise, for a zero bias or a unit gain can hide a wrong backward.
    """
    keys = jax.random.split(key, 6)
    fan_in = block_size * embedding_dim

    def normal(k, shape):
        return jax.random.normal(k, shape, dtype)

    return {
        "C": normal(keys[0], (vocab, embedding_dim)),
        "W1": normal(keys[1], (fan_in, hidden)) * (5 / 3) / fan_in**0.5,
        "W2": normal(keys[2], (hidden, vocab)) * 0.1,
        "b2": normal(keys[3], (vocab,)) * 0.1,
        "bngain": 1 + 0.1 * normal(keys[4], (hidden,)),
        "bnbias": 0.1 * normal(keys[5], (hidden,)),
    }


def zero_taps(params: dict[str, Array], x: ArrayLike) -> dict[str, Array]:
    """Zeros shaped like every intermediate of `forward`, for `jax.grad` to differentiate."""
    shapes = jax.eval_shape(lambda: forward(params, x, jnp.zeros(len(x), jnp.int32))[1])
    return {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}


@functools.partial(jax.jit, static_argnames="bessel")
def forward(
    params: dict[str, Array],
    x: ArrayLike,
    y: ArrayLike,
    taps: dict[str, Array] | None = None,
    *,
    bessel: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """(loss, intermediates), each intermediate plus its tap (zero: the values are unchanged).

    Args:
      params: `init_params`' dict.
      x: [n, block_size] int context codes; y: [n] int next-character codes.
      taps: a zero per intermediate (`zero_taps`), or None for none.
      bessel: divide the batch variance by n - 1, as the lecture does, instead of n.
    """
    t = {} if taps is None else taps
    v = {}

    def let(name, value):
        v[name] = value + t[name] if name in t else value
        return v[name]

    n = x.shape[0]
    C, W1, W2, b2 = params["C"], params["W1"], params["W2"], params["b2"]
    emb = let("emb", C[x])
    embcat = let("embcat", emb.reshape(n, -1))
    hprebn = let("hprebn", embcat @ W1)
    bnmeani = let("bnmeani", hprebn.sum(0, keepdims=True) / n)
    bndiff = let("bndiff", hprebn - bnmeani)
    bndiff2 = let("bndiff2", bndiff**2)
    bnvar = let("bnvar", bndiff2.sum(0, keepdims=True) / (n - 1 if bessel else n))
    bnvar_inv = let("bnvar_inv", (bnvar + EPS) ** -0.5)
    bnraw = let("bnraw", bndiff * bnvar_inv)
    hpreact = let("hpreact", params["bngain"] * bnraw + params["bnbias"])
    h = let("h", jnp.tanh(hpreact))
    logits = let("logits", h @ W2 + b2)
    logit_maxes = let("logit_maxes", logits.max(1, keepdims=True))
    norm_logits = let("norm_logits", logits - logit_maxes)
    counts = let("counts", jnp.exp(norm_logits))
    counts_sum = let("counts_sum", counts.sum(1, keepdims=True))
    counts_sum_inv = let("counts_sum_inv", counts_sum**-1)
    probs = let("probs", counts * counts_sum_inv)
    logprobs = let("logprobs", jnp.log(probs))
    return -logprobs[jnp.arange(n), y].mean(), v


@functools.partial(jax.jit, static_argnames="bessel")
def autodiff(
    params: dict[str, Array], x: ArrayLike, y: ArrayLike, *, bessel: bool = False
) -> dict[str, Array]:
    """`jax.grad` of the loss with respect to every intermediate and every parameter."""

    def loss(params, taps):
        return forward(params, x, y, taps, bessel=bessel)[0]

    d_params, d_taps = jax.grad(loss, argnums=(0, 1))(params, zero_taps(params, x))
    return {**d_params, **d_taps}


@functools.partial(jax.jit, static_argnames="bessel")
def backward(
    params: dict[str, Array], v: dict[str, Array], x: ArrayLike, y: ArrayLike, *, bessel=False
) -> dict[str, Array]:
    """Every gradient, written out line by line from the loss back (the lecture's exercise 1).

    Args:
      params, x, y, bessel: as `forward`.
      v: `forward`'s intermediates.

    Returns:
      {name: d loss / d name} for every name in ORDER.
    """
    n, vocab = v["logits"].shape
    d = {}
    # loss = -mean(logprobs[i, y_i]): -1/n at each label, 0 elsewhere
    d["logprobs"] = jnp.zeros_like(v["logprobs"]).at[jnp.arange(n), y].set(-1.0 / n)
    d["probs"] = d["logprobs"] / v["probs"]  # d log p = dp / p
    # probs = counts * counts_sum_inv: counts_sum_inv is broadcast along a row, so sum the row
    d["counts_sum_inv"] = (v["counts"] * d["probs"]).sum(1, keepdims=True)
    d["counts_sum"] = -(v["counts_sum"] ** -2) * d["counts_sum_inv"]
    # counts reaches the loss twice: through probs and through counts_sum (a sum: a copy back)
    d["counts"] = v["counts_sum_inv"] * d["probs"] + d["counts_sum"]
    d["norm_logits"] = v["counts"] * d["counts"]  # d exp(u) = exp(u) du
    d["logit_maxes"] = -d["norm_logits"].sum(1, keepdims=True)  # about 0: softmax ignores a shift
    # logits reach norm_logits directly and through the max, which routes to the argmax
    argmax = jax.nn.one_hot(v["logits"].argmax(1), vocab, dtype=v["logits"].dtype)
    d["logits"] = d["norm_logits"] + argmax * d["logit_maxes"]
    d["h"] = d["logits"] @ params["W2"].T
    d["W2"] = v["h"].T @ d["logits"]
    d["b2"] = d["logits"].sum(0)
    d["hpreact"] = (1.0 - v["h"] ** 2) * d["h"]  # d tanh(u) = (1 - tanh(u)^2) du
    d["bngain"] = (v["bnraw"] * d["hpreact"]).sum(0)
    d["bnbias"] = d["hpreact"].sum(0)
    d["bnraw"] = params["bngain"] * d["hpreact"]
    d["bnvar_inv"] = (v["bndiff"] * d["bnraw"]).sum(0, keepdims=True)
    d["bnvar"] = -0.5 * (v["bnvar"] + EPS) ** -1.5 * d["bnvar_inv"]
    d["bndiff2"] = jnp.ones_like(v["bndiff2"]) * d["bnvar"] / (n - 1 if bessel else n)
    # bndiff reaches the loss through bnraw and through bndiff2
    d["bndiff"] = v["bnvar_inv"] * d["bnraw"] + 2 * v["bndiff"] * d["bndiff2"]
    d["bnmeani"] = -d["bndiff"].sum(0, keepdims=True)
    d["hprebn"] = d["bndiff"] + d["bnmeani"] / n  # the mean's gradient spreads back evenly
    d["embcat"] = d["hprebn"] @ params["W1"].T
    d["W1"] = v["embcat"].T @ d["hprebn"]
    d["emb"] = d["embcat"].reshape(v["emb"].shape)
    d["C"] = jnp.zeros_like(params["C"]).at[x].add(d["emb"])  # a row used twice gets both
    return d


def cross_entropy_backward(logits: ArrayLike, y: ArrayLike) -> Array:
    """d mean(-log softmax(logits)[i, y_i]) / d logits = (softmax(logits) - onehot(y)) / n."""
    n, vocab = logits.shape
    return (jax.nn.softmax(logits, axis=1) - jax.nn.one_hot(y, vocab, dtype=logits.dtype)) / n


def batch_norm_backward(
    bngain: ArrayLike, bnvar_inv: ArrayLike, bnraw: ArrayLike, dhpreact: ArrayLike, *, bessel=False
) -> Array:
    """d loss / d hprebn from d loss / d hpreact, in one line.

    With xhat = bnraw, g = bngain * dhpreact (= d loss / d xhat) and s = bnvar_inv, the three
    paths (through bndiff directly, through the mean, through the variance) add up to

        dhprebn = s / n * (n g - sum(g) - xhat * sum(g * xhat))            (variance over n)

    and bngain is constant along the batch, so it moves out of the sums. The lecture's
    variance over n - 1 scales the last term by n / (n - 1).
    """
    n = dhpreact.shape[0]
    k = n / (n - 1) if bessel else 1.0
    return (
        bngain
        * bnvar_inv
        / n
        * (n * dhpreact - dhpreact.sum(0) - k * bnraw * (dhpreact * bnraw).sum(0))
    )


@functools.partial(jax.jit, static_argnames="bessel")
def fused_grads(
    params: dict[str, Array], x: ArrayLike, y: ArrayLike, *, bessel: bool = False
) -> tuple[Array, dict[str, Array]]:
    """(loss, parameter gradients) by the lecture's exercise 4: the two one-liners, no autodiff."""
    loss, v = forward(params, x, y, bessel=bessel)
    dlogits = cross_entropy_backward(v["logits"], y)
    dhpreact = (1.0 - v["h"] ** 2) * (dlogits @ params["W2"].T)
    dhprebn = batch_norm_backward(
        params["bngain"], v["bnvar_inv"], v["bnraw"], dhpreact, bessel=bessel
    )
    demb = (dhprebn @ params["W1"].T).reshape(v["emb"].shape)
    grads = {
        "C": jnp.zeros_like(params["C"]).at[x].add(demb),
        "W1": v["embcat"].T @ dhprebn,
        "W2": v["h"].T @ dlogits,
        "b2": dlogits.sum(0),
        "bngain": (v["bnraw"] * dhpreact).sum(0),
        "bnbias": dhpreact.sum(0),
    }
    return loss, grads


class Row(NamedTuple):
    """One line of the lecture's `cmp`: exact (bitwise), approximate (allclose), max diff."""

    name: str
    exact: bool
    approximate: bool
    max_diff: float


def cmp(name: str, got: ArrayLike, want: ArrayLike, *, rtol=1e-5, atol=1e-8) -> Row:
    """The lecture's `cmp(s, dt, t)`, with torch.allclose's default tolerances."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise ValueError(f"cmp {name}: shape {got.shape} against {want.shape}.")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return Row(
        name,
        bool(np.array_equal(got, want)),
        bool(np.allclose(got, want, rtol=rtol, atol=atol)),
        float(diff.max()),
    )


def table(rows: list[Row]) -> str:
    """Rows as the lecture prints them, one per line, aligned."""
    width = max(len(r.name) for r in rows)
    return "\n".join(
        f"{r.name:<{width}} | exact: {r.exact!s:5} | approximate: {r.approximate!s:5} | "
        f"maxdiff: {r.max_diff:.3g}"
        for r in rows
    )
