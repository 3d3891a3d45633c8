"""`check_layer`: `gradcheck.check` on a `jaxnet.layers` layer or network, train and eval.

A layer is (init, forward, backward): forward(params, state, x, *, train, key) returns
(out, residual, new_state) and backward(params, residual, g) returns (dparams, dx). Its
hand VJP is forward and backward tied into one `jax.custom_vjp` of (params, x) (for a
`serial` network, the whole chain of backwards); the reference is `jax.vjp` of
`jaxnet.layers.apply`, the plain forward (a straight-through layer's `definition`). For a
network with a straight-through layer, finite differences and second derivatives are
skipped, with the reason: its backward is a convention, not the derivative of a value.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxnet import layers, vjp
from jaxnet.gradcheck import _battery as battery
from jaxnet.gradcheck import _trees as trees
from jaxnet.gradcheck._check import check
from jaxnet.gradcheck._report import SKIPPED, GradcheckError, Report, Row
from jaxnet.typing import PyTree

MODES = ("train", "eval")


def hand_vjp(layer, state: PyTree, *, train: bool, key=None) -> Callable:
    """(params, x) -> out, with the layer's own backward as its VJP (`jaxnet.vjp.layer`)."""
    call = vjp.layer(layer, train=train)
    return lambda params, x: call(params, state, x, key)[0]


def autodiff_reference(layer, state: PyTree, *, train: bool, key=None) -> Callable:
    """(params, x) -> out by `jaxnet.layers.apply`, for `jax.vjp` to differentiate."""
    return lambda params, x: layers.apply(layer, params, state, x, train=train, key=key)[0]


def away_from_zero(key, params: PyTree, scale: float = 0.1) -> PyTree:
    """Adds scale * N(0, 1) to every floating leaf: a zero init can hide a wrong backward."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    moved = [
        x + scale * jax.random.normal(k, jnp.shape(x), x.dtype) if trees.is_float(x) else x
        for k, x in zip(keys, leaves)
    ]
    return treedef.unflatten(moved)


def check_layer(
    layer,
    input_shape: Sequence[int],
    *,
    x: ArrayLike | None = None,
    state: PyTree | None = None,
    input_scale: float = 1.0,
    dtype: DTypeLike = jnp.float32,
    modes: Sequence[str] = MODES,
    same_modes: bool | None = None,
    reference: Callable | None = None,
    transforms: Sequence[str] = battery.TRANSFORMS,
    order: int = 2,
    strict: bool = False,
    seed: int = 0,
    raise_on_failure: bool = True,
    **kwargs,
) -> Report:
    """Checks a layer's backward in train and eval mode, under every transform.

    Args:
      layer: a `jaxnet.layers.Layer` (a `serial` network is one too).
      input_shape: x's shape, batch axis first, for `layer.init`.
      x: the input; default input_scale * N(0, 1) of input_shape and dtype (pass integer
        ids for an embedding).
      state: e.g. batch_norm's running statistics; default the layer's init.
      dtype: of the params and of the default x.
      modes: "train" and/or "eval" (dropout and batch_norm differ between them).
      same_modes: whether train and eval run the same program: then the layer is checked
        once, its rows prefixed "train=eval". None (default) finds out by comparing the
        jaxprs of the two forwards (and references); False checks each mode regardless.
      reference: (params, state, x, *, train, key) -> out in plain jax.numpy; default the
        layer's own forward, differentiated by `jax.vjp`.
      transforms, order, strict, seed: as `gradcheck.check`; x gets the batch axis.
      raise_on_failure: raise `GradcheckError` with the combined report on failure.
      **kwargs: passed on to `gradcheck.check` (rtol, atol, ...).

    Returns:
      One `Report` for all modes; each row's check is prefixed with its mode ("train=eval"
      for a layer checked once).
    """
    modes = _validate(layer, modes)
    params, init_state, random_x, dropout_key = _setup(layer, input_shape, dtype, input_scale, seed)
    state = init_state if state is None else state
    x = random_x if x is None else jnp.asarray(x)
    bound = functools.partial(_check_mode, layer, params, state, x, dropout_key, reference,
                              transforms=transforms, order=order, seed=seed, **kwargs)  # fmt: skip
    if same_modes is None and len(modes) == 2:
        same_modes = _same_program(layer, params, state, x, dropout_key, reference)
    if same_modes and len(modes) == 2:
        report = _combine({"train=eval": bound(train=True)})
        report = report._replace(notes=[*report.notes, SAME_MODES])
    else:
        report = _combine({mode: bound(train=mode == "train") for mode in modes})
    if raise_on_failure and (not report.passed or (strict and report.weak)):
        raise GradcheckError(report)
    return report


SAME_MODES = "train=eval: train and eval run the same program, checked once"


def _draw(layer, input_shape, dtype, input_scale, seed):
    """(params moved away from zero, the initial state, a random x, the dropout key)."""
    init_key, move_key, x_key, dropout_key = jax.random.split(jax.random.key(seed), 4)
    _, params, state = layer.init(init_key, input_shape, dtype)
    x = input_scale * jax.random.normal(x_key, input_shape, dtype)
    return away_from_zero(move_key, params), state, x, dropout_key


def _setup(layer, input_shape, dtype, input_scale, seed):
    draw = functools.partial(_draw, layer, tuple(input_shape), dtype, input_scale)
    try:  # one compile for every draw: eagerly, each op of init and of the draws compiles
        return jax.jit(draw, compiler_options=battery.COMPILER_OPTIONS)(seed)
    except jax.errors.JAXTypeError:  # an init that needs concrete values runs eagerly
        return draw(seed)


def _validate(layer, modes) -> tuple[str, ...]:
    """The modes as a tuple; a TypeError or ValueError for what check_layer cannot check."""
    if not all(callable(getattr(layer, name, None)) for name in ("init", "forward", "backward")):
        raise TypeError(
            "check_layer: layer must be a jaxnet.layers.Layer (init, forward, backward), "
            f"got {type(layer).__name__}."
        )
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise ValueError(f"check_layer: modes must be 'train' and/or 'eval', got {modes!r}.")
    return modes


def _check_mode(layer, params, state, x, key, reference, *, train, order, **kwargs) -> Report:
    """`check` of the layer in one mode; a straight-through one by its convention."""
    ref = autodiff_reference(layer, state, train=train, key=key)
    if reference is not None:
        ref = _bound(reference, state, train, key)
    f = hand_vjp(layer, state, train=train, key=key)
    straight = _straight_through(layer, params, state, x, train, key)
    report = check(f, ref, params, x, order=1 if straight else order, batch_argnums=(1,),
                   arg_names=("params", "x"), finite_differences=not straight,
                   raise_on_failure=False, **kwargs)  # fmt: skip
    return _by_convention(report, order) if straight else report


def _same_program(layer, params, state, x, key, reference) -> bool:
    """Whether the forward (and the reference) trace to the same jaxpr in train and eval."""

    def programs(train):
        fns = [lambda p, x: layer.forward(p, state, x, train=train, key=key)]
        fns.append(autodiff_reference(layer, state, train=train, key=key) if reference is None
                   else _bound(reference, state, train, key))  # fmt: skip
        return [str(jax.make_jaxpr(fn)(params, x)) for fn in fns]

    return programs(True) == programs(False)


def _straight_through(layer, params, state, x, train, key) -> list[str]:
    """The leaf layers with a `definition` (a backward by convention), found by a trace."""
    found = []

    def record(leaf):
        if leaf.definition is not None:
            found.append(leaf.name)
        return lambda *args, **kwargs: layers.plain(leaf, *args, **kwargs)

    jax.eval_shape(lambda p, x: layers.run(layer, record, p, state, x, train=train, key=key),
                   params, x)  # fmt: skip
    return found


def _by_convention(report: Report, order: int) -> Report:
    """Skipped rows for what a straight-through layer cannot be held to, with the reason."""
    reason = (
        "straight-through: the backward is a convention (jax.grad of the definition), not "
        "the derivative of the forward's value, which finite differences and second "
        "derivatives would measure"
    )
    names = ["finite_difference", *(battery.ORACLES_2 if order == 2 else ())]
    rows = [Row(name, "-", (), SKIPPED, 0.0, None, 0.0, reason) for name in names]
    return report._replace(rows=report.rows + rows)


def _bound(reference, state, train, key):
    return lambda params, x: reference(params, state, x, train=train, key=key)


def _combine(reports: dict[str, Report]) -> Report:
    rows = [
        r._replace(check=f"{mode} {r.check}") for mode, rep in reports.items() for r in rep.rows
    ]
    notes = [f"{mode}: {n}" for mode, rep in reports.items() for n in rep.notes]
    audit = next(iter(reports.values())).residuals
    return Report(rows, notes, audit)
