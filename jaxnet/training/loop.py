"""Training loops driven by optax, each one jitted `lax.scan`."""

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnet import layers, losses
from jaxnet.layers import Layer
from jaxnet.training import parallel
from jaxnet.typing import Array, Params, PyTree

# The optax optimizers that train a network from a gradient and a learning rate (which may
# be a schedule). Left out: the other optax transformations (scale_by_*, clip, ema, freeze,
# add_decayed_weights, ...), lbfgs and polyak_sgd (they need the loss value), noisy_sgd (a
# key), and sm3 and rprop (no schedule).
OPTIMIZERS = tuple(name for name in (
    "adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw", "adamw",
    "adan", "amsgrad", "lamb", "lars", "lion", "nadam", "nadamw", "novograd", "radam",
    "rmsprop", "sgd", "yogi",
) if hasattr(optax, name))  # fmt: skip


def hand_sgd(learning_rate: float) -> optax.GradientTransformation:
    """Plain SGD written out by hand, the lesson's `w -= learning_rate * grad_w`."""

    def update(grads, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g: -learning_rate * g, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _allowed(name: str) -> str:
    """Returns `name` if it is one of `OPTIMIZERS`.

    Raises:
      ValueError: any other name or value, with the nearest allowed names.
    """
    if isinstance(name, str) and name in OPTIMIZERS:
        return name
    near = difflib.get_close_matches(name, OPTIMIZERS, n=3) if isinstance(name, str) else []
    raise ValueError(
        f"optimizer {name!r} is not an optax optimizer that jaxnet trains with"
        + (f"; did you mean {near}?" if near else ".")
        + f" Choose one of {list(OPTIMIZERS)}."
    )


def make_optimizer(name: str, learning_rate, **kwargs) -> optax.GradientTransformation:
    """The optax optimizer called `name` (one of `OPTIMIZERS`), at learning_rate.

    Args:
      name: e.g. "sgd", "adam", "adamw".
      learning_rate: a float or an optax schedule.
      **kwargs: passed on to the optax factory, e.g. weight_decay.

    Raises:
      ValueError: `name` is not one of `OPTIMIZERS`, with the nearest names.
    """
    return getattr(optax, _allowed(name))(learning_rate, **kwargs)


def _takes_weight_decay(name: str) -> bool:
    """Whether the optimizer `name` takes a weight_decay of its own (adamw, lion, lamb, ...)."""
    return "weight_decay" in inspect.signature(getattr(optax, _allowed(name))).parameters


SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


def make_schedule(name: str, learning_rate: float, steps: int) -> optax.Schedule:
    """A learning-rate schedule over `steps` updates, peaking at learning_rate.

    constant; cosine (decay to 0); warmup_cosine (linear warm-up over the first 5%, then
    cosine to 0); linear (decay to 0).
    """
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, steps)
    if name == "warmup_cosine":
        warmup = max(1, steps // 20)
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, steps)
    if name == "linear":
        return optax.linear_schedule(learning_rate, 0.0, steps)
    raise ValueError(f"schedule={name!r} is not supported; expected one of {list(SCHEDULES)}.")


def make_training_optimizer(
    name: str,
    learning_rate: float,
    schedule: str,
    steps: int,
    weight_decay: float = 0.0,
    clip_grad_norm: float = 0.0,
) -> optax.GradientTransformation:
    """The optax optimizer `name` on a schedule, with weight decay and gradient clipping.

    Weight decay is passed to optimizers that take it (adamw, lion, lamb: decoupled decay);
    for the others it is L2, `weight_decay * params` added to the gradient. clip_grad_norm
    > 0 first scales the gradient down to that global norm (`optax.clip_by_global_norm`).
    """
    optimizer = _decayed(name, make_schedule(schedule, learning_rate, steps), weight_decay)
    if clip_grad_norm:
        return optax.chain(optax.clip_by_global_norm(clip_grad_norm), optimizer)
    return optimizer


def _decayed(name: str, lr: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
    if not weight_decay:
        return make_optimizer(name, lr)
    if _takes_weight_decay(name):
        return make_optimizer(name, lr, weight_decay=weight_decay)
    return optax.chain(optax.add_decayed_weights(weight_decay), make_optimizer(name, lr))


def fit_full_batch(
    loss_and_grad: Callable[..., tuple[Array, PyTree]],
    params: PyTree,
    batch: tuple[Array, ...],
    optimizer: optax.GradientTransformation,
    steps: int,
) -> tuple[PyTree, Array]:
    """Trains on one fixed batch for `steps` steps, as one jitted `lax.scan`.

    Args:
      loss_and_grad: (params, *batch) -> (loss, grads), e.g. `jax.value_and_grad(loss)`.
      params: the starting params.
      batch: the arrays passed to loss_and_grad after params, e.g. (x, y).
      optimizer: an optax gradient transformation.
      steps: how many steps.

    Returns:
      (final params, losses [steps]), losses[t] measured before the update of step t.
    """

    @jax.jit
    def run(params, batch):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = loss_and_grad(params, *batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
        return params, losses

    return run(params, batch)


# --------------------------------------------------------------- minibatch epochs


class TrainState(NamedTuple):
    """Everything a run needs to go on: a checkpoint holds exactly this."""

    params: Params
    opt_state: optax.OptState
    step: Array  # updates applied so far, int32 []
    key: Array  # raw data (uint32) of the PRNG key for the next epoch's shuffle
    net_state: PyTree = ()  # the network's state (batch_norm's running statistics)


def init_state(
    params: Params, optimizer: optax.GradientTransformation, key, net_state: PyTree = ()
) -> TrainState:
    """The state before the first step; key (a typed PRNG key) drives every shuffle."""
    step = jnp.zeros((), jnp.int32)
    return TrainState(params, optimizer.init(params), step, jax.random.key_data(key), net_state)


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def epoch_indices(key, n: int, batch_size: int) -> Array:
    """A shuffle of range(n) as [batches, batch_size]; every batch the same shape.

    The last batch, when n is not a multiple of batch_size, is completed with the first
    examples of the same shuffle: every example is seen at least once an epoch, and the
    epoch compiles once whatever n is.
    """
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size={batch_size} must lie in [1, {n}] for {n} examples.")
    order = jax.random.permutation(key, n)
    pad = batches_per_epoch(n, batch_size) * batch_size - n
    return jnp.concatenate([order, order[:pad]]).reshape(-1, batch_size)


def make_train_epoch(
    loss: Callable,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    mesh=None,
    augment: Callable[[Array, Array], Array] | None = None,
    *,
    stateful: bool = False,
) -> Callable[[TrainState, Array, Array], tuple[TrainState, Array]]:
    """One jitted epoch: shuffle, then a `lax.scan` of optimizer steps over the batches.

    The scan carries a flag: from the first step whose loss or gradient norm is not finite,
    no step updates the params or the optimizer state, so the state returned is the last
    finite one and `state.step` counts only the updates applied. `first_nonfinite` reads
    the flag back once per epoch, with no host round-trip per step.

    Args:
      loss: (params, x_batch, y_batch) -> scalar mean loss, e.g. a partial of mlp_loss; or,
        with stateful=True, (params, net_state, x_batch, y_batch, key) -> (loss, new
        net_state), e.g. a partial of `network_loss`, with a fresh key each step (dropout).
      optimizer: an optax gradient transformation.
      batch_size: the global batch size.
      mesh: a `jaxnet.training.parallel` mesh; each batch is sharded along its "data" axis, and
        state and data are replicated (so batch statistics are those of the global batch).
        Default: all devices.
      augment: (key, x_batch) -> x_batch, applied to each batch inside the scan.
      stateful: whether loss takes and returns the network's state, `state.net_state`.

    Returns:
      epoch(state, x, y) -> (state, per-batch losses). x and y stay on the device; the
      function compiles once for given shapes, however many epochs run.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_batch_size(batch_size, mesh)
    loss_and_grad = jax.value_and_grad(loss, has_aux=stateful)
    batch = parallel.sharded_batch(mesh)

    def value_and_grad(params, net_state, xb, yb, key):
        if not stateful:
            value, grads = loss_and_grad(params, xb, yb)
            return value, net_state, grads
        (value, net_state), grads = loss_and_grad(params, net_state, xb, yb, key)
        return value, net_state, grads

    def epoch(state: TrainState, x: Array, y: Array):
        key, shuffle_key, augment_key = jax.random.split(jax.random.wrap_key_data(state.key), 3)
        indices = epoch_indices(shuffle_key, x.shape[0], batch_size)
        keys = jax.random.split(augment_key, indices.shape[0])

        def step(carry, idx_and_key):
            params, opt_state, net_state, count, ok = carry
            idx, step_key = idx_and_key
            # A stateless loss takes no key: its augmentation keeps the step's whole key.
            step_key, loss_key = jax.random.split(step_key) if stateful else (step_key, None)
            idx = jax.lax.with_sharding_constraint(idx, batch)
            xb, yb = (jax.lax.with_sharding_constraint(a[idx], batch) for a in (x, y))
            if augment is not None:
                xb = augment(step_key, xb)
            value, new_net_state, grads = value_and_grad(params, net_state, xb, yb, loss_key)
            ok = ok & jnp.isfinite(value) & jnp.isfinite(optax.tree.norm(grads))
            # A cond, not a select per leaf: no extra pass over params and optimizer state.
            params, opt_state, net_state = jax.lax.cond(
                ok, functools.partial(_update, optimizer, grads, new_net_state), lambda s: s,
                (params, opt_state, net_state),
            )  # fmt: skip
            return (params, opt_state, net_state, count + ok, ok), value

        carry = (state.params, state.opt_state, state.net_state, state.step, jnp.array(True))
        (params, opt_state, net_state, count, _), losses = jax.lax.scan(
            step, carry, (indices, keys)
        )
        return TrainState(params, opt_state, count, jax.random.key_data(key), net_state), losses

    everywhere = parallel.replicated(mesh)
    return _placing(jax.jit(epoch, in_shardings=everywhere, out_shardings=everywhere), everywhere)


def _update(optimizer, grads, new_net_state, state):
    params, opt_state, _ = state
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_net_state


def first_nonfinite(before: TrainState, after: TrainState, losses: Array) -> int | None:
    """The index in the epoch of the step whose loss or gradient was not finite, or None.

    `before` and `after` are the states around one call of `make_train_epoch`'s epoch.
    """
    applied = int(after.step) - int(before.step)
    return None if applied == len(losses) else applied


def _placing(jitted, shardings):
    """jitted, called on its arguments moved to `shardings` first.

    Host arrays and arrays already placed then share one cache entry, so the first call
    (fresh params) and the later ones (its own outputs) run the same compiled program.
    `.jitted` is the jitted function itself.
    """

    def call(*args):
        placed = shardings if isinstance(shardings, tuple) else (shardings,) * len(args)
        return jitted(*(jax.device_put(a, s) for a, s in zip(args, placed)))

    call.jitted = jitted
    return call


def example_losses(
    net: Layer, params: Params, state: PyTree, x: Array, y: Array, loss: "str | losses.Loss"
) -> tuple[Array, Array]:
    """Per-example (loss, correct) of the network in eval mode; correct is NaN for float
    targets [n, k].

    loss is "cross_entropy" (labels [n]) or "mse": on the label value when y is [n] (lesson
    003; the single output rounded to the nearest class counts as the prediction), or a
    regression on targets [n, k]. Eval mode: batch_norm uses its running statistics.
    """
    out, _ = layers.apply(net, params, state, x, train=False)
    name = losses.get(loss).name
    if name == "cross_entropy":
        values = -jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1)[:, 0]
        return values, (out.argmax(-1) == y).astype(out.dtype)
    if y.ndim == 1:
        return jnp.square(out[:, 0] - y), (jnp.round(out[:, 0]) == y).astype(out.dtype)
    values = jnp.square(out - y).mean(-1)
    return values, jnp.full(values.shape, jnp.nan, out.dtype)


def make_evaluate(
    net: Layer, loss: "str | losses.Loss", mesh=None
) -> Callable[..., tuple[Array, Array]]:
    """Jitted evaluate(params, state, x, y, weights) -> (mean loss, accuracy) over rows of
    weight 1, in eval mode.

    Rows are sharded over the mesh; `pad_rows` makes their count divide the device count.
    For an MLP from `init_mlp`, net is `jaxnet.mlp_network(sizes)` and state is {}.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh

    def evaluate(params, state, x, y, weights):
        values, correct = example_losses(net, params, state, x, y, loss)
        total = weights.sum()
        return (values * weights).sum() / total, (correct * weights).sum() / total

    everywhere, rows = parallel.replicated(mesh), parallel.sharded_batch(mesh)
    shardings = (everywhere, everywhere, rows, rows, rows)
    jitted = jax.jit(evaluate, in_shardings=shardings, out_shardings=everywhere)
    return _placing(jitted, shardings)


def pad_rows(x, y, multiple: int):
    """(x, y, weights) with rows repeated up to a multiple of `multiple`, weight 0 on those."""
    n = len(x)
    pad = -n % multiple
    take = np.arange(n + pad) % n
    weights = (np.arange(n + pad) < n).astype(np.float32)
    return x[take], y[take], weights
