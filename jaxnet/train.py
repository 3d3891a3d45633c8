"""Training loops driven by optax, each one jitted `lax.scan`."""

import difflib
from collections.abc import Callable

import jax
import optax

from jaxnet.typing import Array, PyTree

_COMMON_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "lamb", "lion", "nadam")


def hand_sgd(learning_rate: float) -> optax.GradientTransformation:
    """Plain SGD written out by hand, the lesson's `w -= learning_rate * grad_w`."""

    def update(grads, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g: -learning_rate * g, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
    """The optax optimizer called `name` (e.g. "sgd", "adam", "adamw"), at learning_rate.

    Raises:
      ValueError: `name` is not an optax optimizer, with the nearest names.
    """
    factory = getattr(optax, name, None) if name.isidentifier() else None
    try:
        optimizer = factory(learning_rate, **kwargs) if callable(factory) else None
    except TypeError:
        optimizer = None
    if not isinstance(optimizer, optax.GradientTransformation):
        near = difflib.get_close_matches(name, dir(optax), n=3)
        raise ValueError(
            f"optimizer {name!r} is not an optax optimizer taking a learning rate"
            + (f"; did you mean {near}?" if near else "")
            + f" Common choices: {list(_COMMON_OPTIMIZERS)}."
        )
    return optimizer


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
