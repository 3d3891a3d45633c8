"""A reversible stack (RevNet, Gomez et al. 2017; Reformer): O(1) activation memory in depth.

Each block maps halves (x1, x2) to y1 = x1 + f(x2), y2 = x2 + g(y1), which can be undone:
x2 = y2 - g(y1), x1 = y1 - f(x2). So the stack's forward keeps nothing but its output, and
its backward walks the blocks in reverse, rebuilding each block's input from its output
and taking f's and g's own backward rules at the rebuilt points: one more forward of every
f and g, in exchange for the activations of the whole stack.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxnet.layers import core


def _check_blocks(blocks) -> None:
    if not blocks or not all(
        isinstance(b, (tuple, list)) and len(b) == 2 and all(isinstance(x, core.Layer) for x in b)
        for b in blocks
    ):
        raise TypeError(
            f"reversible: expected one or more (f, g) pairs of jaxnet.layers.Layer, got "
            f"{blocks!r}; e.g. reversible((serial(dense(h), gelu(), dense(h)), "
            "serial(dense(h), gelu(), dense(h))))."
        )


def _halves(x):
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] % 2:
        raise core.LayerError(
            f"reversible: input of shape {jnp.shape(x)}; its last axis must be even, split "
            "into halves (x1, x2)."
        )
    return jnp.split(x, 2, axis=-1)


def _refuse_running_state(state, train: bool) -> None:
    if train and jax.tree_util.tree_leaves(state):
        raise core.LayerError(
            "reversible: a layer inside keeps running state (batch_norm in train mode); its "
            "update cannot be rebuilt from the output. Use layer_norm inside a reversible "
            "stack, or eval mode."
        )


def _keys(key, n: int) -> list:
    """A (f key, g key) pair per block, the same in the forward and in the rebuild."""
    return [core._split(k, 2) for k in core._split(key, n)]


def _block_backward(block, params, state, y, g, *, train, keys):
    """The block's input (x1, x2) rebuilt from its output y = (y1, y2), the cotangent of x
    from that of y, and the block's param grads [df, dg]."""
    # y1 = x1 + f(x2), y2 = x2 + g(y1): rebuild x2 = y2 - g(y1), then x1 = y1 - f(x2).
    # Backward, from (dy1, dy2): g's input y1 collects dy2 through g, so
    #   dy1' = dy1 + g'(y1)^T dy2,  dx1 = dy1',  dx2 = dy2 + f'(x2)^T dy1'.
    (f, g_layer), (pf, pg), (sf, sg) = block, params, state
    (y1, y2), (dy1, dy2) = y, g
    gy1, g_res, _ = g_layer.forward(pg, sg, y1, train=train, key=keys[1])
    x2 = y2 - gy1
    fx2, f_res, _ = f.forward(pf, sf, x2, train=train, key=keys[0])
    dpg, through_g = g_layer.backward(pg, g_res, dy2)
    dx1 = dy1 + through_g
    dpf, through_f = f.backward(pf, f_res, dx1)
    x, dx = (y1 - fx2, x2), (dx1, dy2 + through_f)
    # The barrier ties the rebuilt input to its cotangent: XLA cannot rebuild every block
    # first and hold all their inputs at once, which would undo the saving.
    x, dx = jax.lax.optimization_barrier((x, dx))
    return x, dx, [dpf, dpg]


def reversible(*blocks: Sequence[core.Layer]) -> core.Layer:
    """A reversible stack: each (f, g) block maps halves (x1, x2) of the last axis to
    y1 = x1 + f(x2), y2 = x2 + g(y1); the output is concat(y1, y2).

    The residual of the whole stack is its output: the backward walks the blocks in reverse,
    rebuilding x2 = y2 - g(y1) and x1 = y1 - f(x2), and takes f's and g's backward rules at
    the rebuilt points. Activation memory is that of one block, whatever the depth; the
    time is one more forward of every f and g (a block of two dense layers each: 16 matrix
    products per block instead of autodiff's 12).

    Accuracy: the rebuilt inputs are the true ones up to rounding, which the rebuild carries
    through every block below it. Measured (benchmarks/memory_bench.py): 32 blocks of
    serial(dense(256), gelu(), dense(256, init=N(0, 0.02^2))) on width 512 give float32
    gradients within 1.0e-5 of autodiff's (max |difference| / max |autodiff| per leaf),
    2e-14 in float64. Blocks that amplify (with kaiming init, 32 blocks of x + f(x) grow
    activations to ~1e12) lose the input to cancellation in y - f(x): in float32 keep the
    blocks near the identity (small last layers), or rebuild in float64.

    Dropout works: the rebuild draws the same masks from the same keys. A layer with running
    state (batch_norm in train mode) is refused. The "ops" and "autodiff" modes walk f and g
    as any combinator's children, storing their activations.

    Args:
      *blocks: (f, g) pairs of layers (each may be a `serial`) mapping [..., C/2] to itself.

    Params and state: one [f's, g's] pair per block.
    """
    _check_blocks(blocks)
    n = len(blocks)

    def init(key, input_shape, dtype=jnp.float32):
        if input_shape[-1] % 2:
            raise core.LayerError(f"reversible: input width {input_shape[-1]} must be even.")
        half = (*input_shape[:-1], input_shape[-1] // 2)
        params, state = [], []
        for i, (block, k) in enumerate(zip(blocks, jax.random.split(key, n))):
            made = [layer.init(lk, half, dtype) for layer, lk in zip(block, jax.random.split(k))]
            if any(tuple(shape) != half for shape, _, _ in made):
                raise core.LayerError(
                    f"reversible: block {i} maps {half} to {[tuple(s) for s, _, _ in made]}; "
                    "f and g must keep the half's shape (end each with dense(C / 2))."
                )
            params.append([p for _, p, _ in made])
            state.append([s for _, _, s in made])
        return tuple(input_shape), params, state

    def compose(child, params, state, x, *, train=False, key=None):
        core._check_list("reversible", params, n, "params", [f for f, _ in blocks])
        _refuse_running_state(state, train)
        x1, x2 = _halves(x)
        residuals, new_state = [], []
        for (f, g), (pf, pg), (sf, sg), (kf, kg) in zip(blocks, params, state, _keys(key, n)):
            fx2, rf, sf = child(f)(pf, sf, x2, train=train, key=kf)
            x1 = x1 + fx2
            gx1, rg, sg = child(g)(pg, sg, x1, train=train, key=kg)
            x2 = x2 + gx1
            residuals.append([rf, rg])
            new_state.append([sf, sg])
        return jnp.concatenate([x1, x2], axis=-1), residuals, new_state

    def forward(params, state, x, *, train=False, key=None):
        out, _, new_state = compose(core._own_rules, params, state, x, train=train, key=key)
        # The residual: the output, the state (an input) and the key, under the mode's name.
        return out, (out, state, {"train" if train else "eval": key}), new_state

    def backward(params, residual, g):
        out, state, mode = residual
        train, key = "train" in mode, next(iter(mode.values()))
        y, dy, keys = _halves(out), _halves(g), _keys(key, n)
        grads = [None] * n
        for i in reversed(range(n)):
            y, dy, grads[i] = _block_backward(blocks[i], params[i], state[i], y, dy,
                                              train=train, keys=keys[i])  # fmt: skip
        return grads, jnp.concatenate(dy, axis=-1)

    return core.Layer(init, forward, backward, "reversible", compose=compose)
