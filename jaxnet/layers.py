"""Layers as pairs of pure rules: lesson 003's Module refactor, done the JAX way.

Each constructor returns a `Layer`, a NamedTuple of pure functions:

    init(key, input_shape, dtype=jnp.float32) -> (output_shape, params, state)
    forward(params, state, x, *, train, key) -> (out, residual, new_state)
    backward(params, residual, g) -> (dparams, dx)

`forward` is plain jax.numpy and keeps the smallest residual its `backward` needs;
`backward` is derived by hand, with the derivation beside it. `serial(*layers)` is again a
Layer whose backward walks the layers in reverse, as the lesson's `Model.backward`, and
`jaxnet.network_loss` fuses any such network and its loss into one `jax.custom_vjp`.

Residuals are shared for free: a ReLU or tanh keeps its output, which is also the next
dense layer's input, so the fused chain holds that array once.

A layer whose backward is deliberately not the derivative of its forward (a
straight-through estimator) sets `definition`: a forward with the same value whose
`jax.grad` is the intended backward. The "autodiff" mode and the checks use it.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import initializers, ops
from jaxnet.typing import Array, ArrayLike, DTypeLike, Initializer, PyTree


class Layer(NamedTuple):
    """A layer's pure rules. See the module docstring for the signatures."""

    init: Callable
    forward: Callable
    backward: Callable
    name: str = "layer"
    # (params, state, x, *, train, key) -> (out, new_state) whose jax.grad is `backward`,
    # for a layer whose backward is not the derivative of `forward`; None otherwise.
    definition: Callable | None = None
    # For a combinator (serial, residual): (leaf_apply, params, state, x, *, train, key)
    # -> (out, new_state), running each inner leaf layer through leaf_apply(layer).
    compose: Callable | None = None


def _stateless_init(key, input_shape, dtype=jnp.float32):
    """The init of a layer without params or state that keeps its input's shape."""
    del key, dtype
    return tuple(input_shape), {}, {}


def _elementwise(name: str, forward_fn: Callable, backward_fn: Callable) -> Layer:
    """A layer y = f(x) of no params: forward_fn(x) -> (y, residual); backward_fn(residual, g)."""

    def forward(params, state, x, *, train=False, key=None):
        del params, train, key
        _check_float(name, x)
        y, residual = forward_fn(x)
        return y, residual, state

    def backward(params, residual, g):
        del params
        return {}, backward_fn(residual, g)

    return Layer(_stateless_init, forward, backward, name)


class LayerError(ValueError):
    """A layer was given input it cannot take; the message says which layer and why."""


def _check_float(name: str, x) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{name}: input has dtype {jnp.result_type(x)}; expected a floating array. "
            "Integer token ids go through an embedding layer first."
        )


def _check_dtype(name: str, x, like, what: str) -> None:
    if jnp.result_type(x) != jnp.result_type(like):
        raise TypeError(
            f"{name}: input has dtype {jnp.result_type(x)} but {what} is "
            f"{jnp.result_type(like)}; cast with x.astype({str(jnp.result_type(like))!r})."
        )


def _check_fits(name: str, x, param, what: str) -> None:
    """x's last axis must match param's first (its features), and x its dtype."""
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != param.shape[0]:
        raise LayerError(
            f"{name}: input of shape {jnp.shape(x)} does not fit {what} of shape "
            f"{param.shape}; expected [..., {param.shape[0]}], features on the last axis."
        )
    _check_dtype(name, x, param, what)


# ----------------------------------------------------------------------------- dense


def _initializer(init: "str | Initializer") -> Initializer:
    if callable(init):
        return init
    return initializers.get(init)


def dense(
    features: int, *, bias: bool = True, init: "str | Initializer" = "kaiming_normal"
) -> Layer:
    """The lessons' `lin`: y = x @ w + b over the last axis.

    Args:
      features: fan_out.
      bias: with a bias "b" (zero-initialised, except under "torch_default"); no "b" key
        at all when False.
      init: a name from `jaxnet.initializers.INITIALIZERS` or a callable
        (key, shape, dtype) -> Array, as `jax.nn.initializers`.

    Params: {"w": [fan_in, fan_out], "b": [fan_out]}.
    """
    if not isinstance(features, (int, np.integer)) or features < 1:
        raise ValueError(f"dense: features={features!r} must be a positive int.")
    w_init = _initializer(init)

    def init_fn(key, input_shape, dtype=jnp.float32):
        fan_in = input_shape[-1]
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, (fan_in, features), dtype)}
        if bias:
            params["b"] = (
                initializers.torch_default_bias(b_key, (features,), dtype, fan_in=fan_in)
                if init == "torch_default"
                else initializers.zeros(b_key, (features,), dtype)
            )
        return (*input_shape[:-1], features), params, {}

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        w = params["w"]
        _check_fits("dense", x, w, "w")
        y = x @ w
        return (y + params["b"] if "b" in params else y), x, state  # residual: the input

    def backward(params, x, g):
        # The lessons' lin_grad, derived beside `jaxnet.ops.linear_backward`:
        # dx = g @ w.T, dw = x.T @ g and db = g summed over the leading axes.
        dx, dw, db = ops.linear_backward(x, params["w"], g)
        return ({"w": dw, "b": db} if "b" in params else {"w": dw}), dx

    return Layer(init_fn, forward, backward, "dense")


# ----------------------------------------------------------------------- activations


def relu() -> Layer:
    """max(x, 0), gradient 0 at exactly 0 and NaN kept NaN (as `jax.nn.relu`)."""

    def forward(x):
        y = jax.nn.relu(x)
        return y, y  # residual: the output, also the next layer's input; y > 0 iff x > 0

    def backward(y, g):
        return jnp.where(y > 0, g, jnp.zeros_like(g))  # d relu/dx = 1[x > 0]

    return _elementwise("relu", forward, backward)


def leaky_relu(negative_slope: float = 0.01) -> Layer:
    """x for x > 0, negative_slope * x otherwise (lesson 002's LeakyReLU)."""
    if not negative_slope > 0:
        raise ValueError(f"leaky_relu: negative_slope={negative_slope} must be > 0 (0 is relu()).")

    def forward(x):
        y = jnp.where(x > 0, x, negative_slope * x)
        return y, y  # a positive slope keeps the sign: y > 0 iff x > 0

    def backward(y, g):
        return jnp.where(y > 0, g, negative_slope * g)  # dy/dx = 1 or the slope

    return _elementwise("leaky_relu", forward, backward)


def general_relu(*, leak: float = 0.0, sub: float = 0.0, maxv: float | None = None) -> Layer:
    """fast.ai's GeneralRelu: leaky_relu(x, leak) - sub, clamped at maxv.

    Lesson 003's `Relu` is general_relu(sub=0.5): the shift re-centres the output near 0.
    """
    if leak < 0:
        raise ValueError(f"general_relu: leak={leak} must be >= 0.")

    def forward(x):
        positive = x > 0
        y = jnp.where(positive, x, leak * x) - sub
        clamped = None
        if maxv is not None:
            clamped = y >= maxv  # False for NaN: a NaN stays NaN, as torch's clamp keeps it
            y = jnp.where(clamped, jnp.asarray(maxv, y.dtype), y)
        # residual: the masks (1 byte each); x - sub + sub need not round back to x > 0.
        return y, (positive, clamped)

    def backward(masks, g):
        positive, clamped = masks
        # dy/dx = (1 if x > 0 else leak) where y is below maxv, and 0 where clamped.
        dx = jnp.where(positive, g, leak * g)
        return dx if clamped is None else jnp.where(clamped, jnp.zeros_like(g), dx)

    return _elementwise("general_relu", forward, backward)


def tanh() -> Layer:
    """tanh(x); its derivative 1 - tanh^2 needs only the output."""

    def forward(x):
        y = jnp.tanh(x)
        return y, y

    def backward(y, g):
        return g * (1 - y * y)  # d tanh(x)/dx = 1 - tanh(x)^2

    return _elementwise("tanh", forward, backward)


_GELU_C = float(np.sqrt(2 / np.pi))
_GELU_A = 0.044715


def gelu() -> Layer:
    """GELU, the tanh approximation (`jax.nn.gelu`'s default):

    y = x * Phi(x) ~ 0.5 x (1 + tanh(c (x + a x^3))), c = sqrt(2 / pi), a = 0.044715.
    """

    def forward(x):
        t = jnp.tanh(_GELU_C * (x + _GELU_A * x**3))
        return 0.5 * x * (1 + t), x  # residual: the input; y alone does not give x back

    def backward(x, g):
        # u = c (x + a x^3), t = tanh(u): dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
        t = jnp.tanh(_GELU_C * (x + _GELU_A * x**3))
        du = _GELU_C * (1 + 3 * _GELU_A * x * x)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)

    return _elementwise("gelu", forward, backward)


# ------------------------------------------------------------------- normalization


def _scale_bias_init(key, input_shape, dtype=jnp.float32):
    """A norm layer's init: scale 1 and bias 0 per feature (the last axis), no state."""
    del key
    features = input_shape[-1]
    params = {"scale": jnp.ones((features,), dtype), "bias": jnp.zeros((features,), dtype)}
    return tuple(input_shape), params, {}


def _check_features(name: str, x, params) -> None:
    _check_fits(name, x, params["scale"], "scale")


def layer_norm(*, eps: float = 1e-5) -> Layer:
    """Normalizes each example over its last axis, then scale * xhat + bias.

    Params: {"scale": [features], "bias": [features]}. Residual: xhat and 1/std.
    """

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        _check_features("layer_norm", x, params)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        rstd = jax.lax.rsqrt(var + eps)
        xhat = (x - mean) * rstd
        return xhat * params["scale"] + params["bias"], (xhat, rstd), state

    def backward(params, residual, g):
        # Per row of k features: xhat = (x - mu) r, r = (var + eps)^(-1/2), y = s xhat + b.
        # With h = g s (the cotangent of xhat), d mu/dx = 1/k, d var/dx_i = 2 (x_i - mu)/k:
        #   dx = r (h - mean(h) - xhat mean(h xhat)),
        # dscale = sum of g xhat and dbias = sum of g over every leading axis.
        xhat, rstd = residual
        axes = tuple(range(g.ndim - 1))
        h = g * params["scale"]
        dx = rstd * (
            h
            - jnp.mean(h, axis=-1, keepdims=True)
            - xhat * jnp.mean(h * xhat, axis=-1, keepdims=True)
        )
        return {"scale": jnp.sum(g * xhat, axis=axes), "bias": jnp.sum(g, axis=axes)}, dx

    return Layer(_scale_bias_init, forward, backward, "layer_norm")


def batch_norm(*, momentum: float = 0.1, eps: float = 1e-5) -> Layer:
    """Batch normalization over every axis but the last (features), as torch's BatchNorm1d.

    Train mode normalizes with the batch mean and the BIASED variance (divide by n) and
    moves the running statistics as torch does: mean <- (1 - m) mean + m batch_mean,
    var <- (1 - m) var + m batch_var * n / (n - 1) (the running estimate is unbiased).
    Eval mode uses the running statistics: an affine map with a simple backward.

    Params: {"scale", "bias"} [features]; state: {"mean", "var"} [features], which keeps its
    dtype across steps.
    """
    if not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm: momentum={momentum} must lie in [0, 1].")

    def init(key, input_shape, dtype=jnp.float32):
        shape, params, _ = _scale_bias_init(key, input_shape, dtype)
        features = input_shape[-1]
        state = {"mean": jnp.zeros((features,), dtype), "var": jnp.ones((features,), dtype)}
        return shape, params, state

    def forward(params, state, x, *, train=False, key=None):
        del key
        _check_features("batch_norm", x, params)
        axes = tuple(range(x.ndim - 1))
        if not train:
            rstd = jax.lax.rsqrt(state["var"].astype(x.dtype) + eps)
            xhat = (x - state["mean"].astype(x.dtype)) * rstd
            residual = {"xhat": xhat, "running_rstd": rstd}  # the key says: eval mode
            return xhat * params["scale"] + params["bias"], residual, state
        n = int(np.prod(x.shape[:-1]))
        if n < 2:
            raise LayerError(
                f"batch_norm: train mode needs at least 2 examples per feature, got input of "
                f"shape {x.shape}: the variance of one example is 0 and its unbiased running "
                "estimate divides by n - 1 = 0. Use a larger batch, eval mode (train=False), or "
                "layer_norm."
            )
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: divide by n
        rstd = jax.lax.rsqrt(var + eps)
        xhat = (x - mean) * rstd
        running = {
            "mean": (1 - momentum) * state["mean"] + momentum * mean.astype(state["mean"].dtype),
            "var": (1 - momentum) * state["var"]
            + momentum * (var * (n / (n - 1))).astype(state["var"].dtype),
        }
        return xhat * params["scale"] + params["bias"], {"xhat": xhat, "rstd": rstd}, running

    def backward(params, residual, g):
        xhat = residual["xhat"]
        axes = tuple(range(g.ndim - 1))
        dscale, dbias = jnp.sum(g * xhat, axis=axes), jnp.sum(g, axis=axes)
        if "running_rstd" in residual:
            # Eval mode: xhat = (x - running_mean) r is affine in x, so dx = s r g.
            dx = g * (params["scale"] * residual["running_rstd"])
            return {"scale": dscale, "bias": dbias}, dx
        # Train mode: mu and var depend on every row. makemore part 4's one-line backward,
        #   dx = s r / n (n g - sum(g) - xhat sum(g xhat))   (sums over the batch, per feature)
        # with the biased variance; the lecture's Bessel-corrected forward puts n / (n - 1)
        # before the last sum, here it is 1. The two sums are dbias and dscale, already made.
        n = int(np.prod(g.shape[:-1]))
        dx = (params["scale"] * residual["rstd"]) * (g - dbias / n - xhat * (dscale / n))
        return {"scale": dscale, "bias": dbias}, dx

    return Layer(init, forward, backward, "batch_norm")


# ---------------------------------------------- dropout, the Bernoulli gate, embedding


def dropout(rate: float) -> Layer:
    """Inverted dropout: in train mode each unit is zeroed with probability `rate` and the
    survivors are scaled by 1 / (1 - rate); in eval mode, the identity.

    Train mode needs `key`. Residual: the boolean keep-mask.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate={rate} must lie in [0, 1).")

    def forward(params, state, x, *, train=False, key=None):
        del params
        _check_float("dropout", x)
        if not train or rate == 0:
            return x, None, state
        if key is None:
            raise LayerError(
                "dropout: train mode draws a mask and needs a PRNG key; pass key=... "
                "(e.g. jax.random.key(0)), or train=False for evaluation."
            )
        keep = jax.random.bernoulli(key, 1 - rate, x.shape)
        return jnp.where(keep, x / (1 - rate), jnp.zeros_like(x)), keep, state

    def backward(params, keep, g):
        del params
        if keep is None:  # eval mode: the identity
            return {}, g
        # y = keep * x / (1 - rate), linear in x: dx = keep * g / (1 - rate).
        return {}, jnp.where(keep, g / (1 - rate), jnp.zeros_like(g))

    return Layer(_stateless_init, forward, backward, "dropout")


def bernoulli_gate(*, init_logit: float = 1.0) -> Layer:
    """A learned stochastic gate per feature: y = x * z, z ~ Bernoulli(sigmoid(logits)).

    Train mode draws z for every element (a fresh gate per example) and needs `key`; eval
    mode is deterministic: z = 1[sigmoid(logits) > 0.5], i.e. open where logits > 0.

    The sample has zero derivative in the logits almost everywhere, so jax.grad of the plain
    forward never trains them. The backward is the straight-through estimator instead, and
    `definition` is the forward whose jax.grad it is: x * (z + p - stop_gradient(p)), the
    same value (p - stop_gradient(p) is exactly 0) with dz/dlogits taken as dp/dlogits.

    Params: {"logits": [features]}, all `init_logit` (1.0: each gate open with p = 0.73).
    Residual: the input and the boolean gates.
    """

    def init(key, input_shape, dtype=jnp.float32):
        del key
        params = {"logits": jnp.full((input_shape[-1],), init_logit, dtype)}
        return tuple(input_shape), params, {}

    def gates(params, x, train, key):
        logits = params["logits"]
        _check_fits("bernoulli_gate", x, logits, "logits")
        if not train:
            return jnp.broadcast_to(logits > 0, jnp.shape(x))  # sigmoid(a) > 0.5 iff a > 0
        if key is None:
            raise LayerError(
                "bernoulli_gate: train mode draws the gates and needs a PRNG key; pass "
                "key=... (e.g. jax.random.key(0)), or train=False for the deterministic gates."
            )
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits), jnp.shape(x))

    def forward(params, state, x, *, train=False, key=None):
        z = gates(params, x, train, key)
        return jnp.where(z, x, jnp.zeros_like(x)), (x, z), state

    def backward(params, residual, g):
        # y = x z. dx = g z exactly. z is a step function of the logits a (a sample, or the
        # threshold a > 0), whose derivative is 0 almost everywhere; straight-through takes
        # dz/da := dp/da = p (1 - p), p = sigmoid(a), so da_j = sum over examples of g x p (1 - p).
        # Its bias: the exact gradient of E_z[L] is p (1 - p) E[L(z_j = 1) - L(z_j = 0)];
        # the estimator puts dL/dz_j = g x_j at the sampled z in place of that difference,
        # which is exact only when L is linear in z_j.
        x, z = residual
        p = jax.nn.sigmoid(params["logits"])
        axes = tuple(range(g.ndim - 1))
        dlogits = jnp.sum(g * x, axis=axes) * (p * (1 - p))
        return {"logits": dlogits}, jnp.where(z, g, jnp.zeros_like(g))

    def definition(params, state, x, *, train=False, key=None):
        p = jax.nn.sigmoid(params["logits"])
        z = gates(params, x, train, key).astype(x.dtype)
        return x * (z + (p - jax.lax.stop_gradient(p))), state

    return Layer(init, forward, backward, "bernoulli_gate", definition=definition)


def embedding(vocab: int, features: int) -> Layer:
    """A lookup table: integer ids [...] -> rows [..., features] (makemore's C[X]).

    Params: {"table": [vocab, features]}, drawn from N(0, 1) as torch.nn.Embedding. The input
    is integer, so its cotangent is None. Ids outside [0, vocab) are refused on the host;
    under jit they cannot be read and are clamped, as jnp indexing does.
    """
    for what, value in (("vocab", vocab), ("features", features)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"embedding: {what}={value!r} must be a positive int.")

    def init(key, input_shape, dtype=jnp.float32):
        return (
            (*input_shape, features),
            {"table": jax.random.normal(key, (vocab, features), dtype)},
            {},
        )

    def forward(params, state, x, *, train=False, key=None):
        del train, key
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(
                f"embedding: input has dtype {jnp.result_type(x)}; expected integer ids in "
                f"[0, {vocab}), e.g. x.astype('int32')."
            )
        if not isinstance(x, jax.core.Tracer) and np.size(x):
            values = np.asarray(x)
            if values.min() < 0 or values.max() >= vocab:
                raise LayerError(
                    f"embedding: ids must lie in [0, {vocab}); found values from "
                    f"{values.min()} to {values.max()}."
                )
        return params["table"][x], x, state  # residual: the ids

    def backward(params, ids, g):
        # out[..., :] = table[ids[...], :], so each row of the table collects the cotangents
        # of every position that looked it up: a scatter-add. The ids get no cotangent.
        table = params["table"]
        dtable = jnp.zeros_like(table).at[ids.reshape(-1)].add(g.reshape(-1, table.shape[1]))
        return {"table": dtable}, None

    return Layer(init, forward, backward, "embedding")


def flatten() -> Layer:
    """[batch, d1, d2, ...] -> [batch, d1 * d2 * ...]: makemore's embcat.

    The first axis is the batch: under `jax.vmap` over examples, map over `x[:, None]` so
    that each example keeps a batch axis of 1.
    """

    def init(key, input_shape, dtype=jnp.float32):
        del key, dtype
        return (input_shape[0], int(np.prod(input_shape[1:]))), {}, {}

    def forward(params, state, x, *, train=False, key=None):
        del params, train, key
        if jnp.ndim(x) < 1:
            raise LayerError("flatten: input is a scalar; expected [batch, ...].")
        # residual: a zero-byte array of shape [*x.shape, 0], to carry x's shape back.
        return x.reshape(x.shape[0], -1), jnp.zeros((*x.shape, 0), jnp.bool_), state

    def backward(params, shape_carrier, g):
        del params
        return {}, g.reshape(shape_carrier.shape[:-1])  # a reshape is undone by a reshape

    return Layer(init, forward, backward, "flatten")


# ----------------------------------------------------------------------- combinators


def _split(key, n: int) -> list:
    return [None] * n if key is None else list(jax.random.split(key, n))


def _check_list(name: str, value, n: int, what: str, layers) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = type(value).__name__
        if isinstance(value, (list, tuple)):
            got = f"a {got} of {len(value)}"
        kinds = [layer.name for layer in layers]
        raise LayerError(
            f"{name}: {what} must be a list with one entry per layer ({n}: {kinds}), got {got}; "
            f"build them with the network's init."
        )


def _at_layer(i: int, layer: Layer, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs), its errors prefixed with the layer's index and name."""
    try:
        return fn(*args, **kwargs)
    except (LayerError, TypeError) as e:
        if type(e) not in (LayerError, TypeError):  # JAX's own errors keep their form
            raise
        raise type(e)(f"layer {i} ({layer.name}): {e}") from e


def serial(*layers: Layer) -> Layer:
    """Layers in sequence: itself a Layer, as stax's serial.

    Params and state are lists with one entry per layer ({} for a layer without any); the
    residual is the list of the layers' residuals. Its backward is lesson 003's
    `Model.backward`, made pure: each layer's backward, from the last to the first.
    """
    if not layers or not all(isinstance(layer, Layer) for layer in layers):
        raise TypeError(
            f"serial: expected one or more jaxnet.layers.Layer values, got {layers!r}; "
            "call the constructors, e.g. serial(dense(10), relu())."
        )

    def init(key, input_shape, dtype=jnp.float32):
        params, state, shape = [], [], tuple(input_shape)
        for layer, layer_key in zip(layers, jax.random.split(key, len(layers))):
            shape, p, s = layer.init(layer_key, shape, dtype)
            params.append(p)
            state.append(s)
        return shape, params, state

    def forward(params, state, x, *, train=False, key=None):
        _check_list("serial", params, len(layers), "params", layers)
        _check_list("serial", state, len(layers), "state", layers)
        residuals, new_state = [], []
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state, _split(key, len(layers)))):
            x, r, s = _at_layer(i, layer, layer.forward, p, s, x, train=train, key=k)
            residuals.append(r)
            new_state.append(s)
        return x, residuals, new_state

    def backward(params, residuals, g):
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            grads[i], g = layers[i].backward(params[i], residuals[i], g)
            if g is None and i > 0:
                raise LayerError(
                    f"serial: layer {i} ({layers[i].name}) takes integer input, so it must "
                    "come first."
                )
        return grads, g

    def compose(leaf_apply, params, state, x, *, train=False, key=None):
        _check_list("serial", params, len(layers), "params", layers)
        _check_list("serial", state, len(layers), "state", layers)
        new_state = []
        for i, (layer, p, s, k) in enumerate(zip(layers, params, state, _split(key, len(layers)))):
            x, s = _at_layer(i, layer, run, layer, leaf_apply, p, s, x, train=train, key=k)
            new_state.append(s)
        return x, new_state

    return Layer(init, forward, backward, "serial", compose=compose)


def residual(*layers: Layer) -> Layer:
    """x + serial(*layers)(x), e.g. a pre-norm block:
    residual(layer_norm(), dense(hidden), gelu(), dense(features)).

    Params and state are those of serial(*layers). Its backward adds the incoming cotangent
    (the skip path's) to the inner chain's dx.
    """
    inner = serial(*layers)

    def init(key, input_shape, dtype=jnp.float32):
        shape, params, state = inner.init(key, input_shape, dtype)
        if tuple(shape) != tuple(input_shape):
            raise LayerError(
                f"residual: the inner layers map {tuple(input_shape)} to {tuple(shape)}; "
                "x + f(x) needs f to keep the shape (end the block with dense(features of x))."
            )
        return shape, params, state

    def forward(params, state, x, *, train=False, key=None):
        y, res, new_state = inner.forward(params, state, x, train=train, key=key)
        return x + y, res, new_state

    def backward(params, res, g):
        grads, dx = inner.backward(params, res, g)
        return grads, g + dx  # d(x + f(x)) = g + f'(x)^T g

    def compose(leaf_apply, params, state, x, *, train=False, key=None):
        y, new_state = inner.compose(leaf_apply, params, state, x, train=train, key=key)
        return x + y, new_state

    return Layer(init, forward, backward, "residual", compose=compose)


# ------------------------------------------------------------------------ running


def plain(layer: Layer, params, state, x, *, train=False, key=None):
    """(out, new_state) of a leaf layer by its definition: its forward, or for a
    straight-through layer the forward whose jax.grad is its backward."""
    if layer.definition is not None:
        return layer.definition(params, state, x, train=train, key=key)
    out, _, new_state = layer.forward(params, state, x, train=train, key=key)
    return out, new_state


def run(layer: Layer, leaf_apply: Callable, params, state, x, *, train=False, key=None):
    """(out, new_state): a combinator walks its layers; a leaf goes through leaf_apply(layer)."""
    if layer.compose is not None:
        return layer.compose(leaf_apply, params, state, x, train=train, key=key)
    return leaf_apply(layer)(params, state, x, train=train, key=key)


def _plain_apply(layer: Layer):
    return lambda *args, **kwargs: plain(layer, *args, **kwargs)


def apply(
    net: Layer, params: PyTree, state: PyTree, x: ArrayLike, *, train: bool = False, key=None
) -> tuple[Array, PyTree]:
    """The plain forward, for inference: (out, new_state).

    Eval mode by default (batch_norm uses its running statistics, dropout is the identity).
    Under `jax.jit`, close over `net` or mark it static: it is a NamedTuple of functions.
    """
    return run(net, _plain_apply, params, state, jnp.asarray(x), train=train, key=key)


def init(net: Layer, key: ArrayLike, input_shape, dtype: DTypeLike = jnp.float32):
    """net.init with its arguments checked: (output_shape, params, state)."""
    if not isinstance(net, Layer):
        raise TypeError(f"expected a jaxnet.layers.Layer, got {type(net).__name__}.")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape={input_shape!r} must list positive ints and include the batch axis, "
            "e.g. (1, 784)."
        )
    return net.init(key, shape, dtype)
