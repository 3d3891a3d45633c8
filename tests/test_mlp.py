"""The MLP: every mode's gradient against jax.grad of the reference, and the transforms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import GRADS, LOSSES, TOLERANCES, assert_trees_close, make_problem
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxnet
from jaxnet import gradcheck
from jaxnet.lessons import reference


def _all_grads(params, x, y, loss):
    """{mode: grads} for every mode, and the reference's, in one function to jit."""
    grads = {
        g: jax.grad(functools.partial(jaxnet.mlp_loss, loss=loss, grad=g))(params, x, y)
        for g in GRADS
    }
    grads["forward_and_backward"] = jaxnet.forward_and_backward(params, x, y, loss=loss)[1]
    grads["reference"] = jax.grad(functools.partial(reference.mlp_loss, loss=loss))(params, x, y)
    return grads


def _assert_all_modes_agree(params, x, y, loss, dtype):
    grads = jax.jit(_all_grads, static_argnames="loss")(params, x, y, loss=loss)
    want = grads.pop("reference")
    for mode, got in grads.items():
        assert_trees_close(got, want, **TOLERANCES[dtype], err_msg=f"{mode} {loss} {dtype}")


@pytest.mark.parametrize("loss", LOSSES)
def test_every_mode_matches_reference(loss, dtype):
    params, x, y = make_problem([6, 9, 7, 4], 5, loss, dtype)
    _assert_all_modes_agree(params, x, y, loss, dtype)


@functools.cache
def _losses(loss, dtype):
    """{mode: loss}, forward_and_backward's and the reference's, of one problem: one compile
    for the (loss, dtype) pair's three tests (one per mode) instead of one each."""
    params, x, y = make_problem([6, 9, 4], 5, loss, dtype)

    def losses(params, x, y):
        out = {g: jaxnet.mlp_loss(params, x, y, loss=loss, grad=g) for g in GRADS}
        out["forward_and_backward"] = jaxnet.forward_and_backward(params, x, y, loss=loss)[0]
        out["reference"] = reference.mlp_loss(params, x, y, loss=loss)
        return out

    return jax.device_get(jax.jit(losses)(params, x, y))


@pytest.mark.parametrize(
    "loss", [pytest.param(n, marks=pytest.mark.xdist_group(f"mlp-loss-{n}")) for n in LOSSES]
)
@pytest.mark.parametrize("grad", GRADS)
def test_every_mode_same_loss(loss, grad, dtype):
    values = _losses(loss, dtype)
    assert_trees_close(values[grad], values["reference"], **TOLERANCES[dtype])
    assert_trees_close(values["forward_and_backward"], values["reference"], **TOLERANCES[dtype])


@pytest.mark.slow  # a hypothesis sweep: every new shape compiles
@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    batch=st.integers(1, 8),
    loss=st.sampled_from(LOSSES),
    bias=st.booleans(),
)
def test_any_sizes_and_batch(sizes, batch, loss, bias):
    if loss == "cross_entropy":
        sizes[-1] = max(sizes[-1], 2)
    with jax.enable_x64(True):
        params, x, y = make_problem(sizes, batch, loss, "float64", bias=bias)
        _assert_all_modes_agree(params, x, y, loss, "float64")


def test_lesson_squeeze_output_n1_with_target_n(dtype):
    params, x, y = make_problem([5, 8, 1], 6, "mse", dtype)
    _assert_all_modes_agree(params, x, y[:, 0], "mse", dtype)


def test_batch_of_one(dtype):
    params, x, y = make_problem([5, 8, 3], 1, "cross_entropy", dtype)
    _assert_all_modes_agree(params, x, y, "cross_entropy", dtype)


@pytest.mark.parametrize("grad", GRADS)
def test_relu_at_exactly_zero(grad):
    """Zero inputs and zero biases put every pre-activation exactly at the kink."""
    with jax.enable_x64(True):
        params = jaxnet.init_mlp(jax.random.key(0), [4, 6, 3], dtype="float64")
        x = jnp.zeros((3, 4), "float64").at[0].set(1.0)
        y = jnp.ones((3, 3), "float64")
        got = jax.jit(jax.grad(functools.partial(jaxnet.mlp_loss, grad=grad)))(params, x, y)
        want = jax.jit(jax.grad(reference.mlp_loss))(params, x, y)
        gradcheck.assert_close(got, want, **TOLERANCES["float64"])
        _, manual = jax.jit(jaxnet.forward_and_backward)(params, x, y)
        gradcheck.assert_close(manual, want, **TOLERANCES["float64"])


@pytest.mark.parametrize("grad", ["fused", "ops"])
def test_vmap_per_example_gradients(grad):
    params, x, y = make_problem([5, 7, 3], 4, "cross_entropy", "float32")
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy", grad=grad)
    per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(
        params, x[:, None], y[:, None]
    )
    one = jax.jit(jax.grad(functools.partial(reference.mlp_loss, loss="cross_entropy")))
    for i in range(4):
        want = one(params, x[i : i + 1], y[i : i + 1])
        got = jax.tree_util.tree_map(lambda g, i=i: g[i], per_example)
        gradcheck.assert_close(got, want, **TOLERANCES["float32"])


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("grad", ["fused", "ops"])
def test_hessian_vector_product_reverse_over_reverse(loss, grad):
    with jax.enable_x64(True):
        params, x, y = make_problem([5, 7, 3], 4, loss, "float64")
        v = jax.tree_util.tree_map(jnp.ones_like, params)

        def hvp(f):
            def grad_dot_v(p):
                grads = jax.tree_util.tree_leaves(jax.grad(f)(p, x, y))
                return sum(jnp.vdot(a, b) for a, b in zip(grads, jax.tree_util.tree_leaves(v)))

            return jax.jit(jax.grad(grad_dot_v))(params)

        got = hvp(functools.partial(jaxnet.mlp_loss, loss=loss, grad=grad))
        want = hvp(functools.partial(reference.mlp_loss, loss=loss))
        gradcheck.assert_close(got, want, **TOLERANCES["float64"])


@pytest.mark.parametrize("loss", LOSSES)
def test_fused_finite_differences(loss):
    params, x, y = make_problem([5, 7, 3], 4, loss, "float32")
    gradcheck.assert_vjp(functools.partial(jaxnet.mlp_loss, loss=loss, grad="fused"), params, x, y)


def test_fused_gives_cotangents_for_x_and_float_y():
    params, x, y = make_problem([5, 7, 3], 4, "mse", "float32")
    got = jax.grad(jaxnet.mlp_loss, argnums=(1, 2))(params, x, y)
    want = jax.grad(reference.mlp_loss, argnums=(1, 2))(params, x, y)
    gradcheck.assert_close(got, want, **TOLERANCES["float32"])


@pytest.mark.parametrize("grad", ["fused", "ops"])
def test_forward_mode_is_refused(grad):
    params, x, y = make_problem([5, 7, 3], 4, "mse", "float32")
    loss = functools.partial(jaxnet.mlp_loss, grad=grad)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda p: loss(p, x, y), (params,), (params,))


def test_init_mlp_layout():
    params = jaxnet.init_mlp(jax.random.key(0), [4, 5, 2])
    assert [sorted(layer) for layer in params] == [["b", "w"], ["b", "w"]]
    assert [layer["w"].shape for layer in params] == [(4, 5), (5, 2)]
    assert [layer["b"].shape for layer in params] == [(5,), (2,)]
    assert not jnp.any(params[0]["b"])
    no_bias = jaxnet.init_mlp(jax.random.key(0), [4, 5, 2], bias=False)
    assert [sorted(layer) for layer in no_bias] == [["w"], ["w"]]
    torch_like = jaxnet.init_mlp(jax.random.key(0), [400, 5], init="torch_default")
    assert jnp.any(torch_like[0]["b"]) and jnp.max(jnp.abs(torch_like[0]["b"])) <= 1 / 20


def test_mlp_forward_matches_reference():
    params, x, _ = make_problem([5, 7, 3], 4, "mse", "float32")
    np.testing.assert_allclose(jaxnet.mlp(params, x), reference.mlp(params, x), rtol=1e-6)


def _smoothed_grads(params, x, y, smoothing):
    """{mode: grads} of cross-entropy with label smoothing, and optax's as the reference."""
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy", label_smoothing=smoothing)
    grads = {g: jax.grad(functools.partial(loss, grad=g))(params, x, y) for g in GRADS}
    grads["forward_and_backward"] = jaxnet.forward_and_backward(
        params, x, y, loss="cross_entropy", label_smoothing=smoothing
    )[1]

    def optax_loss(params):  # an implementation independent of jaxnet.reference
        target = optax.smooth_labels(jax.nn.one_hot(y, 4, dtype=x.dtype), smoothing)
        return optax.softmax_cross_entropy(reference.mlp(params, x), target).mean()

    return grads, optax_loss(params), jax.grad(optax_loss)(params)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_label_smoothing_every_mode_matches_optax(smoothing, dtype):
    params, x, y = make_problem([6, 9, 7, 4], 5, "cross_entropy", dtype)
    grads, want_value, want = jax.jit(_smoothed_grads, static_argnums=3)(params, x, y, smoothing)
    for mode, got in grads.items():
        assert_trees_close(got, want, **TOLERANCES[dtype],
                           err_msg=f"{mode} label_smoothing={smoothing} {dtype}")  # fmt: skip
    for grad in GRADS:
        got = jaxnet.mlp_loss(params, x, y, loss="cross_entropy", grad=grad,
                              label_smoothing=smoothing)  # fmt: skip
        assert_trees_close(got, want_value, **TOLERANCES[dtype], err_msg=grad)


def test_label_smoothing_changes_the_gradient_and_passes_finite_differences():
    params, x, y = make_problem([5, 7, 3], 4, "cross_entropy", "float32")
    plain, smoothed = (
        jax.grad(jaxnet.mlp_loss)(params, x, y, loss="cross_entropy", label_smoothing=s)
        for s in (0.0, 0.2)
    )
    assert not gradcheck.compare(plain, smoothed, rtol=1e-3, atol=1e-5).ok
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy", label_smoothing=0.2)
    gradcheck.assert_vjp(loss, params, x, y)


@pytest.mark.parametrize(
    "smoothing, loss, error, match",
    [(1.0, "cross_entropy", ValueError, r"must lie in \[0, 1\)"),
     (-0.1, "cross_entropy", ValueError, r"must lie in \[0, 1\)"),
     (0.1, "mse", ValueError, "cross_entropy' only"),
     (jnp.float32(0.1), "cross_entropy", TypeError, "Python float"),
     ("0.1", "cross_entropy", TypeError, "Python float")],
)  # fmt: skip
def test_bad_label_smoothing_is_refused(smoothing, loss, error, match):
    params, x, y = make_problem([5, 7, 3], 4, loss, "float32")
    with pytest.raises(error, match=match):
        jaxnet.mlp_loss(params, x, y, loss=loss, label_smoothing=smoothing)
