"""Input validation: errors that name the argument and the layer, and say what was expected.

Shape and dtype checks read static shapes, so they run at trace time and work under
`jax.jit`. Label ranges can only be read from concrete arrays: under `jax.jit` they are
skipped, and the losses return NaN for out-of-range labels instead.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.typing import ArrayLike

GRADS = ("fused", "ops", "autodiff")  # the gradient modes of network_loss and mlp_loss


def one_of(value: str, choices: Sequence[str], argument: str) -> str:
    """Returns `value` if it is among `choices`; raises ValueError naming `argument` if not."""
    if value not in choices:
        raise ValueError(f"{argument}={value!r} is not supported; expected one of {list(choices)}.")
    return value


def label_smoothing(value, loss: str = "cross_entropy") -> float:
    """`value` as a Python float in [0, 1); only cross_entropy takes a nonzero one.

    It is a static part of the loss (a jit recompiles per value), not a traced array.
    """
    if isinstance(value, jax.core.Tracer) or not np.isscalar(value) or isinstance(value, str):
        raise TypeError(
            f"label_smoothing must be a Python float, got {type(value).__name__}; "
            "it is fixed for a run, so pass it as a number, not as an array."
        )
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"label_smoothing={value} must lie in [0, 1); 0.1 is the usual choice.")
    if value and loss != "cross_entropy":
        raise ValueError(
            f"label_smoothing={value} applies to loss 'cross_entropy' only, not {loss!r}."
        )
    return value


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def number(value, what: str) -> float:
    """value as a Python float: a finite real number (or a 0-d array of one), not a bool or
    a string.

    Raises:
      TypeError: value is not a real number.
      ValueError: value is NaN or infinite.
    """
    scalar = is_concrete(value) and not isinstance(value, (str, bytes)) and np.ndim(value) == 0
    if not scalar or np.asarray(value).dtype.kind not in "iuf":  # b: a bool, c: complex
        raise TypeError(f"{what}={value!r} must be a real number, not {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what}={value} must be finite.")
    return value


def positive_int(value, what: str) -> int:
    """value as a Python int >= 1; a bool is refused (True would be 1)."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}={value!r} must be a positive int.")
    return int(value)


def integer(value, what: str) -> int:
    """value as an int; TypeError for a bool, a float or anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}={value!r} must be an int.")
    return int(value)


def boolean(value, what: str) -> bool:
    """value as a Python bool; anything else (1, "no") is refused."""
    if not _is_bool(value):
        raise TypeError(f"{what}={value!r} must be True or False, not {type(value).__name__}.")
    return bool(value)


def prng_key(key, what: str) -> None:
    """Raises TypeError unless key is a PRNG key: typed (jax.random.key) or raw uint32
    (jax.random.PRNGKey). An integer seed is not a key."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    if not typed and (dtype != np.uint32 or np.ndim(key) < 1):
        shown = repr(key) if dtype is None else f"an array of {dtype} {np.shape(key)}"
        raise TypeError(
            f"{what}: key={shown} is not a PRNG key; pass key=jax.random.key(0) (or a key "
            "split from one), not an integer seed."
        )


def nonempty_batch(x: ArrayLike, what: str) -> None:
    """Raises ValueError unless x has at least one row: a mean over none is 0/0 = NaN."""
    if np.ndim(x) >= 1 and np.shape(x)[0] == 0:
        raise ValueError(
            f"{what}: x has shape {np.shape(x)}, an empty batch: its mean loss would be NaN "
            "(0/0) and every gradient 0. Pass at least one example."
        )


def is_concrete(x: ArrayLike) -> bool:
    """True when `x` holds values on the host (not a tracer inside jit, vmap or grad)."""
    return not isinstance(x, jax.core.Tracer)


def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _check_layer(i: int, layer, fan_in: int | None) -> int:
    if not isinstance(layer, dict) or "w" not in layer or set(layer) - {"w", "b"}:
        keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
        raise ValueError(
            f"params[{i}] must be a dict with key 'w' and optional key 'b', got {keys}; "
            "build params with jaxnet.init_mlp."
        )
    w_shape = _shape(layer["w"])
    if len(w_shape) != 2:
        raise ValueError(
            f"params[{i}]['w'] must have rank 2 (fan_in, fan_out), got shape {w_shape}."
        )
    if fan_in is not None and w_shape[0] != fan_in:
        raise ValueError(
            f"params[{i}]['w'] has shape {w_shape} but layer {i - 1} outputs {fan_in} features; "
            f"expected shape ({fan_in}, fan_out)."
        )
    if "b" in layer and _shape(layer["b"]) != (w_shape[1],):
        raise ValueError(
            f"params[{i}]['b'] has shape {_shape(layer['b'])}; "
            f"expected ({w_shape[1]},) to match params[{i}]['w'] of shape {w_shape}."
        )
    return w_shape[1]


def check_params(params) -> jnp.dtype:
    """Checks an MLP params list layer by layer; returns the common floating dtype."""
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError(
            f"params must be a non-empty list of layers, got {type(params).__name__}; "
            "build params with jaxnet.init_mlp."
        )
    fan = None
    for i, layer in enumerate(params):
        fan = _check_layer(i, layer, fan)
    dtype = jnp.result_type(params[0]["w"])
    for i, layer in enumerate(params):
        for name, leaf in layer.items():
            if jnp.result_type(leaf) != dtype or not _is_float(leaf):
                raise TypeError(
                    f"params[{i}][{name!r}] has dtype {jnp.result_type(leaf)}; every parameter "
                    f"must share one floating dtype, and params[0]['w'] has {dtype}."
                )
    return dtype


def check_input(params, x: ArrayLike) -> None:
    """Checks x against the first layer: shape [batch, fan_in], the params' dtype."""
    dtype = check_params(params)
    fan_in = _shape(params[0]["w"])[0]
    if len(_shape(x)) != 2 or _shape(x)[1] != fan_in:
        raise ValueError(
            f"x has shape {_shape(x)}; layer 0 (params[0]['w'] of shape "
            f"{_shape(params[0]['w'])}) expects [batch, {fan_in}]. For per-example gradients "
            "under jax.vmap, map over x[:, None] so each example keeps a batch axis."
        )
    if jnp.result_type(x) != dtype:
        raise TypeError(
            f"x has dtype {jnp.result_type(x)} but the params are {dtype}; "
            f"cast with x.astype({str(dtype)!r})."
        )


def check_regression_target(pred_shape: tuple[int, ...], target: ArrayLike, dtype, what: str):
    """Checks a float target of shape pred_shape (or pred_shape[:-1] when pred ends in 1)."""
    shape = _shape(target)
    squeezable = len(pred_shape) >= 1 and pred_shape[-1] == 1 and shape == pred_shape[:-1]
    if shape != pred_shape and not squeezable:
        raise ValueError(
            f"{what}: target y has shape {shape} but the prediction has shape {pred_shape}; "
            "expected equal shapes, or a prediction [n, 1] with a target [n]. "
            "Shapes are never broadcast: [n, 1] against [n, 1]'s transpose would silently "
            "compare every prediction with every target."
        )
    if not _is_float(target) or jnp.result_type(target) != dtype:
        raise TypeError(
            f"{what}: target y has dtype {jnp.result_type(target)}; expected {dtype} to match "
            f"the prediction; cast with y.astype({str(dtype)!r})."
        )


def check_labels(
    logits_shape: tuple[int, ...], labels: ArrayLike, what: str, *, ignore_index: int | None = None
) -> None:
    """Checks integer labels of shape logits_shape[:-1] with values in [0, classes) (or equal
    to ignore_index)."""
    shape = _shape(labels)
    if len(logits_shape) < 1 or shape != logits_shape[:-1]:
        raise ValueError(
            f"{what}: labels have shape {shape} but the logits have shape {logits_shape}; "
            f"expected labels of shape {logits_shape[:-1]}, one integer class per row."
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(
            f"{what}: labels have dtype {jnp.result_type(labels)}; expected integer class "
            "indices (e.g. y.astype('int32')), not one-hot or float targets."
        )
    if is_concrete(labels) and np.size(labels):
        classes = logits_shape[-1]
        values = np.asarray(labels)
        bad = values[((values < 0) | (values >= classes)) & (values != ignore_index)]
        if bad.size:
            also = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
            raise ValueError(
                f"{what}: labels must lie in [0, {classes}) for {classes} classes{also}; found "
                f"{bad.size} outside, e.g. {bad[:5].tolist()}."
            )


def output_shape(params, x: ArrayLike) -> tuple[int, ...]:
    """The MLP's output shape for x, read from static shapes."""
    return (_shape(x)[0], _shape(params[-1]["w"])[1])
