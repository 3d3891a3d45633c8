"""network_fn: a jaxnet block inside a user's own model, with the user's own loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TOLERANCES, assert_trees_close

import jaxnet
from jaxnet import layers

# float32 throughout: gradcheck.assert_close's default atol of 1e-8 failed on elements
# near zero of leaves of order 1 (a rounding difference of 2e-7 in a sum).
TOL = TOLERANCES["float32"]

BLOCK_LAYERS = (layers.dense(16), layers.layer_norm(), layers.gelu(), layers.dense(8))
BLOCK = layers.serial(*BLOCK_LAYERS)
NORM = layers.serial(layers.dense(8, bias=False), layers.batch_norm(), layers.tanh())


def _problem(net, seed=0):
    k_in, k_out, k_net, k_x, k_y = jax.random.split(jax.random.key(seed), 5)
    mine = {
        "w_in": jax.random.normal(k_in, (5, 8)) / 3,
        "w_out": jax.random.normal(k_out, (8, 2)) / 3,
    }
    _, params, state = net.init(k_net, (6, 8))
    x = jax.random.normal(k_x, (6, 5))
    y = jax.random.normal(k_y, (6, 2))
    return {"mine": mine, "net": params}, state, x, y


def _hybrid(net, grad, train=True):
    block = jaxnet.network_fn(net, grad=grad, train=train)

    def loss(all_params, state, x, y):
        h = jnp.tanh(x @ all_params["mine"]["w_in"])  # the user's own layer
        h, _ = block(all_params["net"], state, h)
        pred = h @ all_params["mine"]["w_out"]
        return jnp.mean(jnp.abs(pred - y) ** 1.5)  # the user's own loss

    return loss


@pytest.mark.parametrize("net", [BLOCK, NORM], ids=["ln_gelu", "bn_tanh"])
@pytest.mark.parametrize("grad", ["fused", "ops"])
def test_the_hybrids_gradient_is_jax_grads(net, grad):
    params, state, x, y = _problem(net)
    got = jax.jit(jax.grad(_hybrid(net, grad), argnums=(0, 2)))(params, state, x, y)
    want = jax.jit(jax.grad(_hybrid(net, "autodiff"), argnums=(0, 2)))(params, state, x, y)
    assert_trees_close(got, want, **TOL)


def test_a_wrong_backward_is_caught():
    params, state, x, y = _problem(BLOCK)
    dense = layers.dense(8)

    def scaled_backward(p, r, g):  # every cotangent 1% too large
        return jax.tree_util.tree_map(lambda a: 1.01 * a, dense.backward(p, r, g))

    wrong = dense._replace(backward=scaled_backward)
    net = layers.serial(*BLOCK_LAYERS[:-1], wrong)
    got = jax.jit(jax.grad(_hybrid(net, "fused")))(params, state, x, y)
    want = jax.jit(jax.grad(_hybrid(net, "autodiff")))(params, state, x, y)
    with pytest.raises(AssertionError):
        assert_trees_close(got, want, **TOL)


def test_new_state_is_the_running_statistics_and_has_no_gradient():
    params, state, x, _ = _problem(NORM)
    h = jnp.tanh(x @ params["mine"]["w_in"])
    for grad in ("fused", "ops", "autodiff"):
        f = jaxnet.network_fn(NORM, grad=grad)
        _, new_state = f(params["net"], state, h)
        assert not np.allclose(new_state[1]["mean"], state[1]["mean"])
        dstate = jax.grad(lambda s, f=f: jnp.sum(f(params["net"], s, h)[0]))(state)
        assert all(float(jnp.max(jnp.abs(d))) == 0 for d in jax.tree_util.tree_leaves(dstate))


def test_transforms_vmap_scan_checkpoint_and_grad_of_grad():
    params, state, x, _ = _problem(BLOCK)
    h = jnp.tanh(x @ params["mine"]["w_in"])
    f = jaxnet.network_fn(BLOCK, grad="fused", train=False)
    plain = jaxnet.network_fn(BLOCK, grad="autodiff", train=False)

    def total(fn):
        return lambda p, h: jnp.sum(fn(p, state, h)[0] ** 2)

    # lax.scan: the block applied three times, sharing params
    def scanned(fn):
        def loss(p, h):
            out, _ = jax.lax.scan(lambda c, _: (fn(p, state, c)[0], None), h, None, length=3)
            return jnp.sum(out**2)

        return loss

    # grad of grad: a Hessian-vector product in x
    def hvp(fn, p, h):
        dx = jax.grad(total(fn), argnums=1)
        return jax.grad(lambda h: jnp.vdot(dx(p, h), jnp.ones_like(h)))(h)

    def transformed(fn, p, h):
        return {
            # vmap: per-example gradients, each example with a batch axis of 1
            "vmap": jax.vmap(jax.grad(total(fn)), in_axes=(None, 0))(p, h[:, None]),
            "scan": jax.grad(scanned(fn))(p, h),
            # jax.checkpoint around the block
            "checkpoint": jax.grad(lambda p, h: total(fn)(jax.checkpoint(lambda q: q)(p), h))(p, h),
            "grad_of_grad": hvp(fn, p, h),
        }

    # One jitted program for all of them: eagerly they ran ~180 primitives one by one.
    got, want = jax.jit(lambda p, h: (transformed(f, p, h), transformed(plain, p, h)))(
        params["net"], h
    )
    for name in got:
        assert_trees_close(got[name], want[name], **TOL, err_msg=name)


def test_refuses_what_it_cannot_take():
    with pytest.raises(TypeError, match="jaxnet.layers.Layer"):
        jaxnet.network_fn(lambda x: x)
    with pytest.raises(ValueError, match="grad='numeric'"):
        jaxnet.network_fn(BLOCK, grad="numeric")


def test_params_that_do_not_fit_are_named_at_trace_time():
    params, state, x, _ = _problem(BLOCK)
    h = jnp.tanh(x @ params["mine"]["w_in"])
    extra = [dict(params["net"][0], gamma=jnp.ones(3)), *params["net"][1:]]
    missing = [{"b": params["net"][0]["b"]}, *params["net"][1:]]
    for bad, named in ((extra, "unexpected"), (missing, "missing")):
        for grad in ("fused", "ops", "autodiff"):
            f = jaxnet.network_fn(BLOCK, grad=grad)
            with pytest.raises(ValueError, match=rf"params do not fit the network: .*{named}"):
                jax.grad(lambda p, f=f: jnp.sum(f(p, state, h)[0]))(bad)
    wrong_dtype = [dict(params["net"][0], w=params["net"][0]["w"].astype(jnp.int32)),
                   *params["net"][1:]]  # fmt: skip
    with pytest.raises(TypeError, match="parameters must be floating"):
        jaxnet.network_fn(BLOCK)(wrong_dtype, state, h)
