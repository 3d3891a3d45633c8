"""network_loss: the same loss and gradients three ways for whole networks, and its plumbing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close

import jaxnet
from jaxnet import layers as L
from jaxnet import losses, network

NETWORKS = {
    # makemore part 4: ids -> embedding -> flatten -> dense without bias -> batch_norm -> tanh
    "makemore": (
        lambda: L.serial(
            L.embedding(27, 10),
            L.flatten(),
            L.dense(32, bias=False),
            L.batch_norm(),
            L.tanh(),
            L.dense(27),
        ),  # fmt: skip
        (8, 3),
        27,
    ),
    "layer_norm_gelu": (
        lambda: L.serial(L.dense(32), L.layer_norm(), L.gelu(), L.dense(10)),
        (8, 20),
        10,
    ),
    "pre_norm_residual": (
        lambda: L.serial(
            L.dense(16),
            L.residual(L.layer_norm(), L.dense(32), L.gelu(), L.dense(16)),
            L.residual(L.layer_norm(), L.dense(32), L.gelu(), L.dense(16)),
            L.dense(10),
        ),
        (8, 20),
        10,
    ),
    "general_relu_dropout": (
        lambda: L.serial(
            L.dense(32),
            L.general_relu(leak=0.1, sub=0.4, maxv=6.0),
            L.dropout(0.2),
            L.dense(32),
            L.leaky_relu(),
            L.dense(10),
        ),  # fmt: skip
        (8, 20),
        10,
    ),
    # a straight-through gate: "autodiff" differentiates its definition
    "bernoulli_gate": (
        lambda: L.serial(L.bernoulli_gate(), L.dense(32), L.relu(), L.dense(10)),
        (8, 20),
        10,
    ),
}


def problem(name, dtype, seed=0):
    make, shape, classes = NETWORKS[name]
    net = make()
    keys = jax.random.split(jax.random.key(seed), 5)
    _, params, state = net.init(keys[0], shape, dtype)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    noise = jax.random.split(keys[1], len(leaves))
    params = treedef.unflatten(
        [p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(noise, leaves)]
    )
    if name == "makemore":
        x = jax.random.randint(keys[2], shape, 0, 27)
    else:
        x = jax.random.normal(keys[2], shape, dtype)
    y = jax.random.randint(keys[3], shape[:1], 0, classes)
    return net, params, state, x, y, keys[4]


def three_ways(net, params, state, x, y, key, train=True, **options):
    """{grad: ((loss, new_state), grads)} for each grad mode, all from one jitted program."""

    def f(p, grad):
        return network.network_loss(net, p, state, x, y, grad=grad, train=train, key=key,
                                    **options)  # fmt: skip

    def all_modes(p):
        return {g: jax.value_and_grad(f, has_aux=True)(p, g) for g in network.GRADS}

    return jax.jit(all_modes)(params)


# Eval mode changes only batch_norm and dropout: run it where they are (the gate's eval
# mode is checked in test_layers).
MODES = [(name, True) for name in NETWORKS] + [("makemore", False), ("general_relu_dropout", False)]


@pytest.mark.parametrize("name, train", MODES)
def test_three_modes_agree_in_float64(name, train):
    with jax.enable_x64(True):
        net, params, state, x, y, key = problem(name, jnp.float64)
        results = three_ways(net, params, state, x, y, key, train=train, loss="cross_entropy",
                             label_smoothing=0.1)  # fmt: skip
        (value, new_state), grads = results["autodiff"]
        for grad in ("fused", "ops"):
            (v, s), g = results[grad]
            np.testing.assert_allclose(v, value, rtol=1e-12)
            chex_close(g, grads, rtol=1e-10, atol=1e-12)
            chex_close(s, new_state, rtol=1e-12, atol=0)


def chex_close(got, want, **tol):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)


def test_three_modes_agree_in_float32_with_mse_and_a_float_target_gradient():
    net, params, state, x, _, key = problem("layer_norm_gelu", jnp.float32)
    y = jax.random.normal(jax.random.key(7), (8, 10))
    grads = {}
    for grad in network.GRADS:

        def f(p, y, grad=grad):
            return network.network_loss(net, p, state, x, y, loss="mse", grad=grad)[0]

        grads[grad] = jax.jit(jax.grad(f, argnums=(0, 1)))(params, y)
    for grad in ("fused", "ops"):
        assert_trees_close(grads[grad], grads["autodiff"], rtol=2e-5, atol=1e-6, err_msg=grad)


def test_batch_norm_state_moves_in_train_mode_only_and_mode_matters():
    net, params, state, x, y, key = problem("makemore", jnp.float32)
    loss = functools.partial(network.network_loss, net, loss="cross_entropy")
    _, trained = loss(params, state, x, y, train=True)
    _, evaluated = loss(params, state, x, y, train=False)
    assert not np.allclose(trained[3]["mean"], state[3]["mean"])
    chex_close(evaluated, state, rtol=0, atol=0)
    out_train, _ = L.apply(net, params, state, x, train=True)
    out_eval, _ = L.apply(net, params, state, x)
    assert not np.allclose(out_train, out_eval)


def test_loss_by_name_or_value_and_smoothing_rules():
    net, params, state, x, y, key = problem("layer_norm_gelu", jnp.float32)
    by_name, _ = network.network_loss(net, params, state, x, y, loss="cross_entropy",
                                      label_smoothing=0.2)  # fmt: skip
    by_value, _ = network.network_loss(net, params, state, x, y,
                                       loss=losses.cross_entropy(label_smoothing=0.2))  # fmt: skip
    np.testing.assert_allclose(by_name, by_value)
    with pytest.raises(ValueError, match="carries its own"):
        network.network_loss(net, params, state, x, y, loss=losses.cross_entropy(),
                             label_smoothing=0.1)  # fmt: skip
    with pytest.raises(ValueError, match="applies to loss 'cross_entropy' only"):
        network.network_loss(net, params, state, x, y.astype(jnp.float32), loss="mse",
                             label_smoothing=0.1)  # fmt: skip
    with pytest.raises(ValueError, match="loss='hinge' is not supported"):
        network.network_loss(net, params, state, x, y, loss="hinge")
    with pytest.raises(ValueError, match="grad='manual' is not supported"):
        network.network_loss(net, params, state, x, y, loss="mse", grad="manual")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        network.network_loss(net, params, state, x, y.at[0].set(10), loss="cross_entropy")


def test_dropout_needs_a_key_in_train_mode_and_uses_it():
    net, params, state, x, y, key = problem("general_relu_dropout", jnp.float32)
    with pytest.raises(L.LayerError, match="needs a PRNG key"):
        network.network_loss(net, params, state, x, y, loss="cross_entropy")
    a, _ = network.network_loss(net, params, state, x, y, loss="cross_entropy", key=key)
    b, _ = network.network_loss(net, params, state, x, y, loss="cross_entropy",
                                key=jax.random.key(99))  # fmt: skip
    assert a != b


def _loss_of_bias(net, params, state, x, y, grad):
    """The loss as a function of layer 1's bias alone: small enough for a full Hessian."""

    def f(b):
        p = [params[0], {**params[1], "bias": b}, *params[2:]]
        return network.network_loss(net, p, state, x, y, loss="cross_entropy", grad=grad)[0]

    return f


@pytest.mark.parametrize("grad", ["fused", "ops"])
def test_hessian_forward_over_reverse_works_in_every_mode(grad):
    with jax.enable_x64(True):
        net, params, state, x, y, key = problem("layer_norm_gelu", jnp.float64)
        bias = params[1]["bias"]
        # Jitted: eagerly, jacfwd(jacrev) ran ~200 primitives one by one, each compiled.
        got = jax.jit(jax.hessian(_loss_of_bias(net, params, state, x, y, grad)))(bias)
        want = jax.jit(jax.hessian(_loss_of_bias(net, params, state, x, y, "autodiff")))(bias)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_forward_mode_refusal_is_jaxs_own_error():
    net, params, state, x, y, key = problem("layer_norm_gelu", jnp.float32)

    def f(p):
        return network.network_loss(net, p, state, x, y, loss="cross_entropy")[0]

    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(f, (params,), (params,))


def test_the_mlp_is_a_network_and_mlp_loss_is_network_loss():
    sizes = [5, 7, 3]
    params = jaxnet.init_mlp(jax.random.key(0), sizes)
    x = jax.random.normal(jax.random.key(1), (4, 5))
    y = jnp.array([0, 1, 2, 1])
    net = jaxnet.mlp_network(sizes)
    value, state = network.network_loss(net, params, {}, x, y, loss="cross_entropy")
    np.testing.assert_allclose(value, jaxnet.mlp_loss(params, x, y, loss="cross_entropy"))
    assert state == {}
    _, again, _ = net.init(jax.random.key(0), (4, 5))
    chex_close(again, params, rtol=0, atol=0)


# ----------------------------------------------------------------------- hostile input

_EMPTY = "an empty batch: its mean loss would be NaN"


def _dense_params(*sizes):
    """Params of dense layers built by hand: init would compile for seconds."""
    return [{"w": jnp.ones((m, n)), "b": jnp.zeros(n)} for m, n in zip(sizes, sizes[1:])]


@pytest.mark.parametrize("jit", [False, True])
def test_an_empty_batch_is_refused_not_a_nan_loss(jit):
    params, x, labels = _dense_params(3, 4, 2), jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32)
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"x has shape \(0, 3\), " + _EMPTY):
        (jax.jit(loss) if jit else loss)(params, x, labels)
    with pytest.raises(ValueError, match=_EMPTY):
        jaxnet.forward_and_backward(params, x, jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match=_EMPTY):
        network.network_loss(L.serial(L.dense(2)), _dense_params(3, 2), [{}], x, labels,
                             loss="cross_entropy")  # fmt: skip


def test_an_integer_key_is_refused_saying_to_pass_a_prng_key():
    net = L.serial(L.dense(4), L.dropout(0.5), L.dense(2))
    params, state = [*_dense_params(3, 4)[:1], {}, *_dense_params(4, 2)], [{}, {}, {}]
    x, y = jnp.ones((8, 3)), jnp.zeros(8, jnp.int32)
    run = functools.partial(network.network_loss, net, params, state, x, y, loss="cross_entropy")
    for key in (0, jnp.arange(2)):
        with pytest.raises(TypeError, match=r"network_loss: key=.* pass key=jax.random.key\(0\)"):
            run(key=key)
    with pytest.raises(TypeError, match=r"dropout: key=0 is not a PRNG key"):
        L.dropout(0.5).forward({}, {}, x, train=True, key=0)
    for key in (jax.random.key(1), jax.random.PRNGKey(1)):  # typed, or the raw uint32 kind
        assert L.dropout(0.5).forward({}, {}, x, train=True, key=key)[0].shape == x.shape


def test_an_embedding_id_outside_the_table_is_clamped_under_jit_as_documented():
    layer, table = L.embedding(5, 2), jnp.arange(10.0).reshape(5, 2)

    def forward_and_backward(ids):
        out, residual, _ = layer.forward({"table": table}, {}, ids)
        return out, layer.backward({"table": table}, residual, jnp.ones_like(out))[0]["table"]

    ids = jnp.array([-1, 0, 4, 9])
    out, dtable = jax.jit(forward_and_backward)(ids)
    np.testing.assert_array_equal(out, table[jnp.array([0, 0, 4, 4])])  # -1 reads row 0
    np.testing.assert_array_equal(dtable[:, 0], [2, 0, 0, 0, 2])  # the same rows collect g
    with pytest.raises(L.LayerError, match=r"ids must lie in \[0, 5\)"):
        layer.forward({"table": table}, {}, ids)  # eager: still refused
