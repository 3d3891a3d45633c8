"""Bad input: each error names the argument and the layer, and says what was expected."""

import functools

import jax
import jax.numpy as jnp
import pytest
from conftest import make_problem

import jaxnet

ENTRY_POINTS = {
    "mlp_loss": jaxnet.mlp_loss,
    "forward_and_backward": jaxnet.forward_and_backward,
    "jit(grad(mlp_loss))": jax.jit(jax.grad(jaxnet.mlp_loss), static_argnames=("loss", "grad")),
}


@pytest.fixture(params=sorted(ENTRY_POINTS))
def entry(request):
    return ENTRY_POINTS[request.param]


@pytest.fixture
def problem():
    return make_problem([4, 6, 3], 5, "mse", "float32")


def test_x_with_wrong_features(entry, problem):
    params, x, y = problem
    with pytest.raises(
        ValueError,
        match=r"layer 0 \(dense\).*input of shape \(5, 7\) does not fit w of shape \(4, 6\)",
    ):
        entry(params, jnp.ones((5, 7)), y)


def test_x_with_wrong_rank(entry, problem):
    params, x, y = problem
    with pytest.raises(ValueError, match=r"x has shape \(4,\).*x\[:, None\]"):
        entry(params, x[0], y)


def test_params_do_not_chain(entry, problem):
    params, x, y = problem
    params[1]["w"] = jnp.ones((5, 3))
    with pytest.raises(
        ValueError,
        match=r"layer 2 \(dense\).*input of shape \(5, 6\) does not fit w of shape \(5, 3\)",
    ):
        entry(params, x, y)


def test_bias_of_wrong_shape(entry, problem):
    params, x, y = problem
    params[0]["b"] = jnp.ones((4,))
    with pytest.raises(ValueError, match=r"layer 0 \(dense\).*b has shape \(4,\); expected \(6,\)"):
        entry(params, x, y)


def test_weight_of_wrong_rank(entry, problem):
    params, x, y = problem
    params[1]["w"] = jnp.ones((6, 3, 1))
    with pytest.raises(ValueError, match=r"params\[1\]\['w'\] must have rank 2"):
        entry(params, x, y)


def test_unknown_layer_key(entry, problem):
    params, x, y = problem
    params[0]["gamma"] = jnp.ones(6)
    with pytest.raises(ValueError, match=r"params\[0\] must be a dict with key 'w'"):
        entry(params, x, y)


def test_y_of_wrong_shape(entry, problem):
    params, x, y = problem
    with pytest.raises(
        ValueError, match=r"target y has shape \(5, 2\) but the prediction has shape \(5, 3\)"
    ):
        entry(params, x, y[:, :2])


def test_mismatched_dtypes(entry, problem):
    params, x, y = problem
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match=r"input has dtype float64 but w is float32"):
            entry(params, x.astype(jnp.float64), y)
        mixed = [dict(params[0], w=params[0]["w"].astype(jnp.float64)), params[1]]
        with pytest.raises(TypeError, match=r"input has dtype float32 but w is float64"):
            entry(mixed, x, y)
    with pytest.raises(TypeError, match=r"target y has dtype int32; expected float32"):
        entry(params, x, y.astype(jnp.int32))


def test_labels_out_of_range_on_host(problem):
    params, x, _ = problem
    labels = jnp.array([0, 1, 2, 3, 0])
    for entry in (jaxnet.mlp_loss, jaxnet.forward_and_backward):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) .* \[3\]"):
            entry(params, x, labels, loss="cross_entropy")


def test_labels_under_jit_give_nan(problem):
    params, x, _ = problem
    labels = jnp.array([0, 1, 2, 3, 0])
    loss = jax.jit(functools.partial(jaxnet.mlp_loss, loss="cross_entropy"))(params, x, labels)
    assert jnp.isnan(loss)


def test_float_labels_and_wrong_label_shape(problem):
    params, x, _ = problem
    with pytest.raises(TypeError, match="expected integer class indices"):
        jaxnet.mlp_loss(params, x, jnp.zeros(5), loss="cross_entropy")
    with pytest.raises(ValueError, match=r"expected labels of shape \(5,\)"):
        jaxnet.mlp_loss(params, x, jnp.zeros((5, 3), jnp.int32), loss="cross_entropy")


def test_unknown_names(problem):
    params, x, y = problem
    with pytest.raises(ValueError, match=r"loss='l1' is not supported; expected one of \['mse'"):
        jaxnet.mlp_loss(params, x, y, loss="l1")
    with pytest.raises(ValueError, match=r"grad='numeric' is not supported"):
        jaxnet.mlp_loss(params, x, y, grad="numeric")
    with pytest.raises(ValueError, match=r"loss='hinge' is not supported"):
        jaxnet.forward_and_backward(params, x, y, loss="hinge")
    with pytest.raises(ValueError, match=r"unknown initializer 'he'"):
        jaxnet.init_mlp(jax.random.key(0), [3, 2], init="he")
    with pytest.raises(ValueError, match="at least two positive ints"):
        jaxnet.init_mlp(jax.random.key(0), [3])


def test_params_not_a_list(problem):
    _, x, y = problem
    with pytest.raises(ValueError, match="params must be a non-empty list of layers"):
        jaxnet.mlp_loss({"w": jnp.ones((4, 3))}, x, y)
