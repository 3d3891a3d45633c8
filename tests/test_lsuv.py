"""lsuv.rescale: every dense layer of a network, in forward order, to unit output std."""

import jax
import numpy as np
import pytest

import jaxnet
from jaxnet import layers as L
from jaxnet import lsuv


def dense_output_stds(net, params, state, x) -> list[float]:
    """The std of each dense layer's output on x, in the order the forward runs them."""
    found = []

    def leaf_apply(layer):
        def apply(p, s, x, *, train=False, key=None):
            out, new_state = L.plain(layer, p, s, x, train=train, key=key)
            if layer.name == "dense":
                found.append(float(out.std()))
            return out, new_state

        return apply

    L.run(net, leaf_apply, params, state, x)
    return found


NETS = {
    "residual": lambda: L.serial(
        L.dense(16, init="normal"),
        L.residual(L.layer_norm(), L.dense(32, init="normal"), L.gelu(), L.dense(16)),
        L.tanh(),
        L.dense(10),
    ),
    "mlp_network": lambda: jaxnet.mlp_network([20, 32, 32, 10], init="normal"),
}


@pytest.mark.parametrize("name", NETS)
def test_rescale_gives_unit_std_after_every_dense_layer(name):
    net = NETS[name]()
    x = jax.random.normal(jax.random.key(1), (256, 20))
    _, params, state = net.init(jax.random.key(0), x.shape)
    before = dense_output_stds(net, params, state, x)
    assert max(abs(s - 1) for s in before) > 0.5  # init="normal" is far from unit std
    fitted = lsuv.rescale(net, params, state, x)
    np.testing.assert_allclose(dense_output_stds(net, fitted, state, x), 1.0, atol=0.01)
    assert jax.tree_util.tree_structure(fitted) == jax.tree_util.tree_structure(params)


def test_rescale_refuses_a_net_whose_params_it_cannot_match():
    # A dense layer under another name holds a "w" that the walk does not rescale: the
    # k-th dense met would no longer own the k-th "w", so rescale says so, not guesses.
    net = L.serial(L.dense(8), L.relu(), L.dense(4)._replace(name="projection"))
    x = jax.random.normal(jax.random.key(1), (8, 20))
    _, params, state = net.init(jax.random.key(0), x.shape)
    with pytest.raises(ValueError, match="met 1 dense layers but params hold 2"):
        lsuv.rescale(net, params, state, x)
