"""Training loops: optax by name, the hand SGD, the jitted scan."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_problem

import jaxnet
from jaxnet import train


def test_make_optimizer_by_name():
    assert isinstance(train.make_optimizer("adamw", 1e-3), optax.GradientTransformation)
    with pytest.raises(ValueError, match=r"'adma' is not an optax optimizer.*'adam'"):
        train.make_optimizer("adma", 1e-3)
    with pytest.raises(ValueError, match="not an optax optimizer"):
        train.make_optimizer("apply_updates", 1e-3)
    with pytest.raises(ValueError, match="not an optax optimizer"):
        train.make_optimizer("os.system", 1e-3)


def test_hand_sgd_equals_optax_sgd():
    params, x, y = make_problem([4, 6, 3], 5, "mse", "float32")
    loss_and_grad = functools.partial(jaxnet.forward_and_backward, loss="mse")
    hand = train.fit_full_batch(loss_and_grad, params, (x, y), train.hand_sgd(0.1), 20)
    lib = train.fit_full_batch(loss_and_grad, params, (x, y), optax.sgd(0.1), 20)
    jax.tree_util.tree_map(np.testing.assert_array_equal, hand, lib)


def test_fit_full_batch_lowers_the_loss_and_matches_a_python_loop():
    params, x, y = make_problem([4, 6, 3], 5, "mse", "float32")
    loss_and_grad = jax.value_and_grad(jaxnet.mlp_loss)
    final, losses = train.fit_full_batch(loss_and_grad, params, (x, y), optax.sgd(0.05), 30)
    assert losses.shape == (30,) and losses[-1] < losses[0]
    p = params
    for _ in range(30):
        _, g = loss_and_grad(p, x, y)
        p = jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, g)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), final, p
    )
    assert jnp.isfinite(losses).all()
