"""The MLP: `serial(dense, relu, ..., dense)` with its params as a plain list per layer.

`init_mlp` gives `[{"w": [fan_in, fan_out], "b": [fan_out]}, ...]`, one dict per dense
layer, and `mlp_network(sizes)` is the `jaxnet.layers.Layer` that takes exactly those params,
so every tool made for layers (`network_loss`, `train.make_evaluate`) takes an MLP too.
Three ways to the same gradient, picked by `mlp_loss(..., grad=...)`:
  "fused"    the whole network's loss is ONE `jax.custom_vjp`; its backward is the
             hand-derived chain (loss_grad, lin_grad, relu_grad, lin_grad, ...).
  "ops"      each layer its own custom VJP, made from the same rules, composed by JAX.
  "autodiff" the plain forward, differentiated by JAX.
`forward_and_backward` runs the fused chain directly, with no JAX autodiff at all, as the
lessons' numpy code does. A ReLU's output is the next dense layer's input, so the fused
chain keeps that one array for both: no pre-activation and no mask is saved.
"""

import jax
import jax.numpy as jnp

from jaxnet import layers, losses
from jaxnet import network as network_lib
from jaxnet.layers import Layer
from jaxnet.typing import Array, ArrayLike, DTypeLike, Initializer, MLPParams


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
    init: "str | Initializer" = "kaiming_normal",
    bias: bool = True,
    dtype: DTypeLike = jnp.float32,
) -> MLPParams:
    """Initialises an MLP.

    Args:
      key: a PRNG key; split once per layer, then into weight and bias keys.
      sizes: layer widths [fan_in, hidden..., fan_out].
      init: a name from `jaxnet.initializers.INITIALIZERS`, or a callable
        (key, shape, dtype) -> Array. Biases start at zero, except under "torch_default",
        which draws them as `torch.nn.Linear` does.
      bias: whether layers have a bias "b".
      dtype: a floating dtype for every parameter.

    Returns:
      A list with one dict per layer: {"w": [fan_in, fan_out], "b": [fan_out]}.
    """
    _check_sizes(sizes)
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        layers.dense(fan_out, bias=bias, init=init).init(layer_key, (fan_in,), dtype)[1]
        for layer_key, fan_in, fan_out in zip(keys, sizes, sizes[1:])
    ]


def _interleave(params: MLPParams) -> list:
    """The MLP's params as serial's: {} for each relu between the dense layers."""
    return [entry for layer in params for entry in (layer, {})][:-1]


def mlp_network(
    sizes: list[int], *, init: "str | Initializer" = "kaiming_normal", bias: bool = True
) -> Layer:
    """The MLP of `sizes` as a `jaxnet.layers.Layer` whose params are `init_mlp`'s list.

    Its state is {} (no layer keeps any); its init is `init_mlp`.
    """
    _check_sizes(sizes)
    dense = [layers.dense(n, bias=bias, init=init) for n in sizes[1:]]
    inner = layers.serial(*[entry for d in dense[:-1] for entry in (d, layers.relu())], dense[-1])
    no_state = [{}] * (2 * len(sizes) - 3)

    def init_fn(key, input_shape, dtype=jnp.float32):
        if input_shape[-1] != sizes[0]:
            raise ValueError(f"mlp: input_shape {tuple(input_shape)} does not end in {sizes[0]}.")
        params = init_mlp(key, sizes, init=init, bias=bias, dtype=dtype)
        return (*input_shape[:-1], sizes[-1]), params, {}

    def compose(child, params, state, x, *, train=False, key=None):
        if jnp.ndim(x) != 2:
            raise layers.LayerError(
                f"mlp: x has shape {jnp.shape(x)}; expected [batch, {sizes[0]}]. For per-example "
                "gradients under jax.vmap, map over x[:, None] so each example keeps a batch axis."
            )
        out, residuals, _ = inner.compose(child, _interleave(params), no_state, x,
                                          train=train, key=key)  # fmt: skip
        return out, residuals, state

    def backward(params, residuals, g):
        grads, dx = inner.backward(_interleave(params), residuals, g)
        return grads[::2], dx

    return layers.core.combinator("mlp", init_fn, compose, backward)


def _sizes_of(params) -> list[int]:
    """The widths of an `init_mlp` params list, read from its static shapes."""
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError(
            f"params must be a non-empty list of layers, got {type(params).__name__}; "
            "build params with jaxnet.init_mlp."
        )
    for i, layer in enumerate(params):
        if not isinstance(layer, dict) or "w" not in layer or set(layer) - {"w", "b"}:
            keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(
                f"params[{i}] must be a dict with key 'w' and optional key 'b', got {keys}; "
                "build params with jaxnet.init_mlp."
            )
        if jnp.ndim(layer["w"]) != 2:
            raise ValueError(
                f"params[{i}]['w'] must have rank 2 (fan_in, fan_out), got shape "
                f"{jnp.shape(layer['w'])}."
            )
    return [jnp.shape(params[0]["w"])[0], *(jnp.shape(layer["w"])[1] for layer in params)]


def _network_of(params: MLPParams) -> Layer:
    """The `mlp_network` that takes these params; the network checks them against its init."""
    return mlp_network(_sizes_of(params), bias="b" in params[0])


def mlp(params: MLPParams, x: ArrayLike) -> Array:
    """The forward pass: linear layers with ReLU between them, nothing after the last.

    Args:
      params: from `init_mlp`.
      x: inputs [batch, fan_in].

    Returns:
      Outputs [batch, fan_out]. Differentiable through each layer's own hand VJP ("ops").
    """
    return network_lib.network_fn(_network_of(params), grad="ops", train=False)(params, {}, x)[0]


def mlp_loss(
    params: MLPParams,
    x: ArrayLike,
    y: ArrayLike,
    *,
    loss: "str | losses.Loss" = "mse",
    grad: str = "fused",
    label_smoothing: float = 0.0,
) -> Array:
    """The loss of `mlp(params, x)` against y, differentiable three ways.

    Args:
      params: from `init_mlp`.
      x: inputs [batch, fan_in], of the params' dtype.
      y: for "mse" and "sum_squares", float targets shaped like the output ([batch] is
        accepted for an output [batch, 1]); for "cross_entropy", integer labels [batch].
      loss: "mse" (mean), "sum_squares" (sum, as lesson 001), "cross_entropy", or a
        `jaxnet.losses.Loss`.
      grad: "fused" (one hand-derived VJP for the whole network), "ops" (per-layer hand
        VJPs composed) or "autodiff" (JAX differentiates the plain forward).
      label_smoothing: for "cross_entropy" by name, s in [0, 1): the target is 1 - s on
        the label plus s / classes on every class; its gradient is softmax - target.

    Returns:
      A scalar. `jax.grad`, `jax.jit`, `jax.vmap` and grad-of-grad work for every `grad`.
    """
    value, _ = network_lib.network_loss(_network_of(params), params, {}, x, y, loss=loss,
                                        grad=grad, label_smoothing=label_smoothing)  # fmt: skip
    return value


def forward_and_backward(
    params: MLPParams,
    x: ArrayLike,
    y: ArrayLike,
    *,
    loss: "str | losses.Loss" = "mse",
    label_smoothing: float = 0.0,
) -> tuple[Array, MLPParams]:
    """Loss and gradients by the explicit hand-written chain, with no JAX autodiff at all.

    The lessons' `forward_and_backward`: forward, then mse_grad (or its kin), then
    lin_grad and relu_grad layer by layer from the output down: the fused VJP's own
    forward and backward, called directly.

    Args:
      params, x, y, loss, label_smoothing: as `mlp_loss`.

    Returns:
      (loss, grads), grads shaped like params.
    """
    net = _network_of(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    rule, _ = network_lib.check_call(net, params, {}, x, y, loss, label_smoothing)
    out, residuals, _ = net.forward(params, {}, x, train=True)
    value, loss_residual = rule.forward(out, y)
    dout, _ = rule.backward(loss_residual, jnp.ones_like(value))
    grads, _ = net.backward(params, residuals, dout.reshape(out.shape))
    return value, grads
