"""The MLP: params pytree, forward pass, loss, and the whole network's hand-derived VJP.

Three ways to the same gradient, picked by `mlp_loss(..., grad=...)`:
  "fused"    the whole network's loss is ONE `jax.custom_vjp`; its backward is the
             hand-derived chain (loss_grad, lin_grad, relu_grad, lin_grad, ...).
  "ops"      the per-op custom VJPs of `jaxnet.ops`, composed by JAX.
  "autodiff" `jaxnet.reference`, plain jax.numpy differentiated by JAX.
`forward_and_backward` runs the fused chain directly, with no JAX autodiff at all, as the
lessons' numpy code does.
"""

import functools

import jax
import jax.numpy as jnp

from jaxnet import checks, initializers, ops, reference
from jaxnet.typing import Array, ArrayLike, DTypeLike, Layer, Params


def _init_bias(init: str, key, fan_in: int, fan_out: int, dtype) -> Array:
    if init == "torch_default":
        return initializers.torch_default_bias(key, (fan_out,), dtype, fan_in=fan_in)
    return initializers.zeros(key, (fan_out,), dtype)


def _check_sizes(sizes) -> None:
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(n, int) and n > 0 for n in sizes):
        raise ValueError(
            f"sizes must list at least two positive ints (inputs, ..., outputs), got {sizes}."
        )


def init_mlp(
    key: ArrayLike,
    sizes: list[int],
    *,
    init: str = "kaiming_normal",
    bias: bool = True,
    dtype: DTypeLike = jnp.float32,
) -> Params:
    """Initialises an MLP.

    Args:
      key: a PRNG key; split once per layer, then into weight and bias keys.
      sizes: layer widths [fan_in, hidden..., fan_out].
      init: a name from `jaxnet.initializers.INITIALIZERS`. Biases start at zero, except
        under "torch_default", which draws them as `torch.nn.Linear` does.
      bias: whether layers have a bias "b".
      dtype: a floating dtype for every parameter.

    Returns:
      A list with one dict per layer: {"w": [fan_in, fan_out], "b": [fan_out]}.
    """
    _check_sizes(sizes)
    w_init = initializers.get(init)
    params = []
    for layer_key, fan_in, fan_out in zip(jax.random.split(key, len(sizes) - 1), sizes, sizes[1:]):
        w_key, b_key = jax.random.split(layer_key)
        layer = {"w": w_init(w_key, (fan_in, fan_out), dtype)}
        if bias:
            layer["b"] = _init_bias(init, b_key, fan_in, fan_out, dtype)
        params.append(layer)
    return params


def mlp(params: Params, x: ArrayLike) -> Array:
    """The forward pass: linear layers with ReLU between them, nothing after the last.

    Args:
      params: from `init_mlp`.
      x: inputs [batch, fan_in].

    Returns:
      Outputs [batch, fan_out]. Differentiable through the per-op VJPs of `jaxnet.ops`.
    """
    checks.check_input(params, x)
    for layer in params[:-1]:
        x = ops.relu(ops.linear(x, layer["w"], layer.get("b")))
    return ops.linear(x, params[-1]["w"], params[-1].get("b"))


# ------------------------------------------------------- the whole-network chain, by hand


def _affine(x: Array, layer: Layer) -> Array:
    return reference.linear(x, layer["w"], layer.get("b"))


def _forward(params: Params, x: Array) -> tuple[Array, list[Array]]:
    """Output, and each layer's input: all the backward needs besides the params.

    A ReLU's output is the next layer's input, and its mask is that input > 0, so no
    pre-activation and no mask is kept.
    """
    inputs = []
    for layer in params[:-1]:
        inputs.append(x)
        x = jax.nn.relu(_affine(x, layer))
    inputs.append(x)
    return _affine(x, params[-1]), inputs


def _backward(params: Params, inputs: list[Array], dout: Array, *, need_dx: bool):
    """The lessons' backward: lin_grad, relu_grad, lin_grad, ... from the output down.

    Returns:
      (grads shaped like params, cotangent of x or None).
    """
    grads = [None] * len(params)
    g = dout
    for i in reversed(range(len(params))):
        if i == 0 and not need_dx:
            # Skip the one product nobody asked for: the cotangent of the data.
            _, dw, db = ops.linear_backward(inputs[0], params[0]["w"], g)
            dx = None
        else:
            dx, dw, db = ops.linear_backward(inputs[i], params[i]["w"], g)
        grads[i] = {"w": dw, "b": db} if "b" in params[i] else {"w": dw}
        if i > 0:
            g = ops.relu_backward(inputs[i] > 0, dx)
    return grads, dx


def _loss_rules(loss: str, smoothing: float):
    """(forward, backward) of the named loss, label smoothing bound for cross_entropy."""
    forward, backward = ops.LOSS_RULES[loss]
    if loss == "cross_entropy":
        return (functools.partial(forward, smoothing=smoothing),
                functools.partial(backward, smoothing))  # fmt: skip
    return forward, backward


def _loss_forward(loss: str, smoothing: float, out: Array, y: Array):
    """(value, loss residual) of the named loss; the prediction squeezed as y needs."""
    pred = out if loss == "cross_entropy" else ops.squeeze_to(out, y)
    forward, _ = _loss_rules(loss, smoothing)
    return forward(pred, y)


def _loss_backward(loss: str, smoothing: float, residual, g, out_shape):
    """(cotangent of the network output, cotangent of y) for loss cotangent g."""
    _, backward = _loss_rules(loss, smoothing)
    dpred, dy = backward(residual, g)
    return dpred.reshape(out_shape), dy


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused_loss(params, x, y, loss, smoothing):
    out, _ = _forward(params, x)
    return _loss_forward(loss, smoothing, out, y)[0]


def _fused_loss_fwd(params, x, y, loss, smoothing):
    out, inputs = _forward(params, x)
    value, loss_residual = _loss_forward(loss, smoothing, out, y)
    return value, (params, inputs, loss_residual)


def _fused_loss_bwd(loss, smoothing, res, g):
    params, inputs, loss_residual = res
    out_shape = (inputs[-1].shape[0], params[-1]["w"].shape[1])
    dout, dy = _loss_backward(loss, smoothing, loss_residual, g, out_shape)
    grads, dx = _backward(params, inputs, dout, need_dx=True)
    return grads, dx, dy


_fused_loss.defvjp(_fused_loss_fwd, _fused_loss_bwd)


def _check_call(params, x, y, loss: str) -> None:
    checks.one_of(loss, checks.LOSSES, "loss")
    checks.check_input(params, x)
    out_shape = checks.output_shape(params, x)
    checks.check_target(loss, out_shape, y, jnp.result_type(x), f"mlp loss {loss!r}")


def mlp_loss(
    params: Params,
    x: ArrayLike,
    y: ArrayLike,
    *,
    loss: str = "mse",
    grad: str = "fused",
    label_smoothing: float = 0.0,
) -> Array:
    """The loss of `mlp(params, x)` against y, differentiable three ways.

    Args:
      params: from `init_mlp`.
      x: inputs [batch, fan_in], of the params' dtype.
      y: for "mse" and "sum_squares", float targets shaped like the output ([batch] is
        accepted for an output [batch, 1]); for "cross_entropy", integer labels [batch].
      loss: "mse" (mean), "sum_squares" (sum, as lesson 001) or "cross_entropy".
      grad: "fused" (one hand-derived VJP for the whole network), "ops" (per-op hand
        VJPs composed) or "autodiff" (JAX differentiates plain jax.numpy).
      label_smoothing: for "cross_entropy", s in [0, 1): the target is 1 - s on the label
        plus s / classes on every class; its gradient is softmax - target.

    Returns:
      A scalar. `jax.grad`, `jax.jit`, `jax.vmap` and grad-of-grad work for every `grad`;
      forward mode (`jax.jvp`, `jax.jacfwd`) does not work through "fused" or "ops".
    """
    checks.one_of(grad, checks.GRADS, "grad")
    _check_call(params, x, y, loss)
    smoothing = checks.label_smoothing(label_smoothing, loss)
    if grad == "fused":
        return _fused_loss(params, x, y, loss, smoothing)
    if grad == "ops":
        options = {"label_smoothing": smoothing} if loss == "cross_entropy" else {}
        return ops.LOSS_OPS[loss](mlp(params, x), y, **options)
    return reference.mlp_loss(params, x, y, loss=loss, label_smoothing=smoothing)


def forward_and_backward(
    params: Params, x: ArrayLike, y: ArrayLike, *, loss: str = "mse", label_smoothing: float = 0.0
) -> tuple[Array, Params]:
    """Loss and gradients by the explicit hand-written chain, with no JAX autodiff at all.

    The lessons' `forward_and_backward`: forward, then mse_grad (or its kin), then
    lin_grad and relu_grad layer by layer from the output down.

    Args:
      params, x, y, loss, label_smoothing: as `mlp_loss`.

    Returns:
      (loss, grads), grads shaped like params.
    """
    _check_call(params, x, y, loss)
    smoothing = checks.label_smoothing(label_smoothing, loss)
    x, y = jnp.asarray(x), jnp.asarray(y)
    out, inputs = _forward(params, x)
    value, loss_residual = _loss_forward(loss, smoothing, out, y)
    dout, _ = _loss_backward(loss, smoothing, loss_residual, jnp.ones_like(value), out.shape)
    grads, _ = _backward(params, inputs, dout, need_dx=False)
    return value, grads
