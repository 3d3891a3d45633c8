"""Every layer's hand backward against jax.grad of its plain forward, and the cases around it.

One registry lists every layer with an input and a deliberately wrong backward; the tests
run each through the same checks: float64 and float32, finite differences, jit, vmap
(per-example gradients), grad-of-grad, batch sizes 1 and 2, train and eval mode.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close

from jaxnet import layers as L
from jaxnet import network
from jaxnet.lessons import stats


class Case(NamedTuple):
    make: callable  # () -> Layer
    shape: tuple  # the input shape without the batch axis
    wrong: callable  # (layer) -> a Layer whose backward has one deliberate bug
    train: bool = False
    integer: bool = False  # integer ids in [0, 7)
    input_scale: float = 1.0


def _with_backward(layer, fix):
    """layer, its backward's (dparams, dx) passed through fix(params, residual, g, dparams, dx)."""

    def backward(params, residual, g):
        dparams, dx = layer.backward(params, residual, g)
        return fix(params, residual, g, dparams, dx)

    return layer._replace(backward=backward)


def _bias_mean(layer):  # the bias gradient averaged instead of summed over the batch
    return _with_backward(layer, lambda p, r, g, dp, dx: ({**dp, "b": dp["b"] / g.shape[0]}, dx))


def _no_mask(layer):  # the mask dropped: the gradient passes everywhere
    return _with_backward(layer, lambda p, r, g, dp, dx: (dp, g))


def _scaled_dx(factor):
    return lambda layer: _with_backward(layer, lambda p, r, g, dp, dx: (dp, dx * factor))


def _tanh_wrong(layer):  # 1 - y instead of 1 - y^2
    return _with_backward(layer, lambda p, y, g, dp, dx: (dp, g * (1 - y)))


def _gelu_wrong(layer):  # the tanh term's derivative dropped: 0.5 (1 + t) alone
    def fix(p, x, g, dp, dx):
        t = jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))
        return dp, g * 0.5 * (1 + t)

    return _with_backward(layer, fix)


def _norm_without_variance_term(axes_of):
    def wrong(layer):  # dx without -xhat mean(h xhat): the variance's path dropped
        def fix(p, r, g, dp, dx):
            xhat, rstd = (r["xhat"], r["rstd"]) if isinstance(r, dict) else r
            h = g * p["scale"]
            return dp, dx + rstd * xhat * jnp.mean(h * xhat, axis=axes_of(g), keepdims=True)

        return _with_backward(layer, fix)

    return wrong


def _bessel(layer):  # the lecture's n / (n - 1) kept although the forward divides by n
    def fix(p, r, g, dp, dx):
        n = g.shape[0]
        h = g * p["scale"]
        term = r["rstd"] * r["xhat"] * jnp.mean(h * r["xhat"], axis=0)
        return dp, dx + term - n / (n - 1) * term

    return _with_backward(layer, fix)


def _eval_as_train(layer):  # eval mode given the train-mode backward (batch statistics)
    def fix(p, r, g, dp, dx):
        h = g * p["scale"]
        xhat = r["xhat"]
        return dp, r["running_rstd"] * (h - h.mean(0) - xhat * (h * xhat).mean(0))

    return _with_backward(layer, fix)


def _embedding_set(layer):  # rows set instead of scatter-added: repeated ids lose gradient
    def fix(p, ids, g, dp, dx):
        table = p["table"]
        return {"table": jnp.zeros_like(table).at[ids.reshape(-1)].set(
            g.reshape(-1, table.shape[1]))}, dx  # fmt: skip

    return _with_backward(layer, fix)


def _flatten_wrong(layer):  # the cotangent reshaped in column-major order
    return _with_backward(layer, lambda p, r, g, dp, dx: (dp, jnp.reshape(g, dx.shape, order="F")))


def _no_skip(layer):  # the residual block's skip path forgotten in the backward
    return _with_backward(layer, lambda p, r, g, dp, dx: (dp, dx - g))


def _identity_straight_through(layer):  # dz/da taken as 1, not as p (1 - p)
    def fix(p, r, g, dp, dx):
        x, _ = r
        return {"logits": jnp.sum(g * x, axis=tuple(range(g.ndim - 1)))}, dx

    return _with_backward(layer, fix)


def _block():
    return L.residual(L.layer_norm(), L.dense(8), L.gelu(), L.dense(6))


CASES = {
    "dense": Case(lambda: L.dense(5), (4,), _bias_mean),
    "dense_no_bias": Case(lambda: L.dense(5, bias=False), (4,), _scaled_dx(1.01)),
    "relu": Case(L.relu, (6,), _no_mask),
    "leaky_relu": Case(L.leaky_relu, (6,), _no_mask),
    "general_relu": Case(
        lambda: L.general_relu(leak=0.1, sub=0.4, maxv=1.0), (6,), _no_mask, input_scale=2.0
    ),
    "tanh": Case(L.tanh, (6,), _tanh_wrong),
    "gelu": Case(L.gelu, (6,), _gelu_wrong),
    "layer_norm": Case(L.layer_norm, (6,), _norm_without_variance_term(lambda g: -1)),
    "batch_norm_train": Case(L.batch_norm, (6,), _bessel, train=True),
    "batch_norm_eval": Case(L.batch_norm, (6,), _eval_as_train),
    "dropout_train": Case(lambda: L.dropout(0.3), (6,), _scaled_dx(1 - 0.3), train=True),
    "dropout_eval": Case(lambda: L.dropout(0.3), (6,), _scaled_dx(1.01)),
    "embedding": Case(lambda: L.embedding(7, 3), (4,), _embedding_set, integer=True),
    "flatten": Case(L.flatten, (2, 3), _flatten_wrong),
    "residual": Case(_block, (6,), _no_skip),
    "serial": Case(lambda: L.serial(L.dense(5), L.tanh(), L.dense(3)), (4,), _scaled_dx(1.01)),
    # Checked against its definition (the straight-through estimator), not the sample's
    # derivative: L.apply runs a layer's `definition` when it has one.
    "bernoulli_gate_train": Case(L.bernoulli_gate, (6,), _identity_straight_through, train=True),
    "bernoulli_gate_eval": Case(L.bernoulli_gate, (6,), _identity_straight_through),
    "probe": Case(stats.probe, (6,), _scaled_dx(1.01)),  # the identity, recording its input
}

# The layers whose backward is the derivative of their forward: finite differences hold them.
DERIVATIVES = [n for n in CASES if CASES[n].make().definition is None]


def _away_from_zero(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten(
        [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    )


def setup(case, batch, dtype, seed=0):
    """(layer, params, state, x, key) with params and running statistics away from their init."""
    layer = case.make()
    k_init, k_params, k_state, k_x, k_drop = jax.random.split(jax.random.key(seed), 5)
    _, params, state = layer.init(k_init, (batch, *case.shape), dtype)
    params = _away_from_zero(k_params, params)
    state = jax.tree_util.tree_map(lambda s: jnp.abs(s) + 0.5, _away_from_zero(k_state, state))
    if case.integer:
        x = jax.random.randint(k_x, (batch, *case.shape), 0, 7)
    else:
        x = case.input_scale * jax.random.normal(k_x, (batch, *case.shape), dtype)
    return layer, params, state, x, k_drop


def _hand(layer, case):
    """(params, x) -> out through the layer's own custom_vjp: its hand backward."""
    op = network.leaf_op(layer, x_float=not case.integer)
    return lambda p, s, x, k: op(p, s, x, train=case.train, key=k)[0]


def _plain(layer, case):
    """(params, x) -> out by the plain forward, for jax.grad."""
    run = functools.partial(L.apply, layer, train=case.train)
    return lambda p, s, x, k: run(p, s, x, key=k)[0]


def _leaf_apply(layer, case):
    return _hand(layer, case) if layer.compose is None else _composite(layer, case)


def _composite(layer, case):
    """A combinator's hand VJP: its own forward and backward, as one custom_vjp."""
    net_op = network.leaf_op(layer, x_float=not case.integer)
    return lambda p, s, x, k: net_op(p, s, x, train=case.train, key=k)[0]


def vjps(f, params, state, x, key, cotangent_key):
    """(d params, d x) of f at (params, x) for a random cotangent (None for integer x)."""
    integer = not jnp.issubdtype(x.dtype, jnp.floating)
    if integer:
        out, pullback = jax.vjp(lambda p: f(p, state, x, key), params)
        u = jax.random.normal(cotangent_key, out.shape, out.dtype)
        return pullback(u)[0], None
    out, pullback = jax.vjp(lambda p, x: f(p, state, x, key), params, x)
    return pullback(jax.random.normal(cotangent_key, out.shape, out.dtype))


TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}


def _finite_difference_gap(f, params, state, x, key, eps=1e-6):
    """|<vjp(u), v> - (<u, f(a + eps v)> - <u, f(a - eps v)>) / 2 eps| relative, one direction."""
    float_x = jnp.issubdtype(x.dtype, jnp.floating)
    args = (params, x) if float_x else (params,)
    call = (lambda p, x: f(p, state, x, key)) if float_x else (lambda p: f(p, state, x, key))
    out, pullback = jax.vjp(call, *args)
    ku, kv = jax.random.split(jax.random.key(4))
    u = jax.random.normal(ku, out.shape, out.dtype)
    leaves, treedef = jax.tree_util.tree_flatten(args)
    keys = jax.random.split(kv, len(leaves))
    vs = [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    grads = jax.tree_util.tree_leaves(pullback(u))
    analytic = sum(jnp.vdot(g, v) for g, v in zip(grads, vs))

    def at(step):
        moved = treedef.unflatten([a + step * v for a, v in zip(leaves, vs)])
        return jnp.vdot(u, call(*moved))

    numeric = (at(eps) - at(-eps)) / (2 * eps)
    return jnp.abs(analytic - numeric) / jnp.maximum(jnp.abs(numeric), 1e-8)


def _per_example(f, params, state, x, key, cotangent_key):
    """Per-example gradients: vmap over x[:, None], each example keeping a batch axis."""

    def one(xi, k):
        return vjps(f, params, state, xi[None], key, k)

    return jax.vmap(one)(x, jax.random.split(cotangent_key, x.shape[0]))


def _grad_of_grad(f, params, state, x, key, cotangent_key):
    """The gradient of |grad|^2: reverse over reverse through the hand VJP."""

    def sq_norm(p):
        grads = vjps(f, p, state, x, key, cotangent_key)[0]
        return sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads))

    return jax.grad(sq_norm)(params) if jax.tree_util.tree_leaves(params) else None


# Which check runs on which case: every case where the check means something. (These
# were samples, every other case, while each check compiled on its own; with one compile
# per case and program, see `_battery`, the whole grid costs little more.)
BATCH_CASES = [n for n in CASES if n != "batch_norm_train"]  # batch_norm's train mode needs 2
PER_EXAMPLE = [n for n in CASES if not CASES[n].train]  # per-example batch statistics: none
SAMPLES = {
    "float32": list(CASES),
    "small_batches": BATCH_CASES,  # batch sizes 1 and 2, where they mean something
    # general_relu has kinks at 0 and maxv that a random step can cross; its exact check
    # against jax.grad is the one that holds it. The gates' backward is by design not the
    # derivative of their forward, so they are left out.
    "finite_differences": [n for n in DERIVATIVES if n != "general_relu"],
    "per_example": PER_EXAMPLE,
    "grad_of_grad": [n for n in CASES if n not in ("relu", "leaky_relu")],
}


TRANSFORMS = {"per_example": _per_example, "grad_of_grad": _grad_of_grad}


def _battery(name, dtype, program):
    """The checks of case `name` in `dtype` that `program` holds, computed by ONE jitted
    function.

    An XLA compile costs about as much for seven small computations as for three, and far
    more than running them, so each case compiles one program per kind of check and every
    test reads its part of the result (see `results`):
    - "exact": (hand, jax.grad) pairs under "batch 3" and "wrong" (the deliberately wrong
      backward) in float64; "batch 3" in float32, and "batch 2" for batch_norm's train mode;
    - "transforms" (float64): pairs under "batch 1", "batch 2", "per_example" and
      "grad_of_grad", and the finite-difference gap under "finite_differences".
    The exact program is the fast subset's; the transforms and float32 are `slow`.
    """
    case = CASES[name]
    layer, *_ = setup(case, 3, dtype)
    wrong = case.wrong(case.make())  # init and forward unchanged: the same params and x
    fns = {"hand": _leaf_apply(layer, case), "plain": _plain(layer, case),
           "wrong_hand": _leaf_apply(wrong, case), "wrong_plain": _plain(wrong, case)}  # fmt: skip
    f64 = dtype == jnp.float64
    if program == "exact":
        batches = [3] + ([2] if not f64 and name == "batch_norm_train" else [])
        extras = ["wrong"] if f64 else []
    else:
        batches = [1, 2] if name in SAMPLES["small_batches"] else []
        extras = [c for c in ("per_example", "grad_of_grad", "finite_differences")
                  if name in SAMPLES[c]]  # fmt: skip
    inputs = {b: setup(case, b, dtype)[1:] for b in {3, *batches}}  # (params, state, x, key)

    def run(inputs):
        ck = jax.random.key(9)

        def pair(check, batch=3, hand="hand", plain="plain"):
            args = inputs[batch]
            return check(fns[hand], *args, ck), check(fns[plain], *args, ck)

        out = {f"batch {b}": pair(vjps, b) for b in batches}
        for check in extras:
            if check == "wrong":
                out[check] = pair(vjps, hand="wrong_hand", plain="wrong_plain")
            elif check == "finite_differences":
                out[check] = _finite_difference_gap(fns["hand"], *inputs[3])
            else:
                out[check] = pair(TRANSFORMS[check])
        return out

    return jax.device_get(jax.jit(run)(inputs))


@functools.cache
def results(name, dtype_name, program="exact"):
    """_battery's result, once per (case, dtype, program) and process."""
    if dtype_name == "float64":
        with jax.enable_x64(True):
            return _battery(name, jnp.float64, program)
    return _battery(name, jnp.float32, program)


def _close(name, dtype_name, part, program="exact"):
    got, want = results(name, dtype_name, program)[part]
    assert_trees_close(got, want, **TOL[dtype_name])


def _by_case(names):
    """names as parameters, each case's tests grouped on one pytest-xdist worker."""
    return [pytest.param(n, marks=pytest.mark.xdist_group(f"layer-{n}")) for n in names]


@pytest.mark.parametrize("name", _by_case(CASES))
def test_hand_backward_matches_jax_grad_float64(name):
    _close(name, "float64", "batch 3")


@pytest.mark.parametrize("name", _by_case(CASES))
def test_deliberately_wrong_backward_is_caught(name):
    with pytest.raises(AssertionError, match="gradcheck failed: compare"):
        _close(name, "float64", "wrong")


@pytest.mark.parametrize("name", _by_case(["batch_norm_train"]))
def test_batch_norm_at_batch_one_is_a_clear_error_not_nan(name):
    layer, params, state, x, _ = setup(CASES[name], 1, jnp.float32)
    with pytest.raises(L.LayerError, match="at least 2 examples"):
        layer.forward(params, state, x, train=True, key=None)
    _close(name, "float32", "batch 2")


@pytest.mark.slow
@pytest.mark.parametrize("name", _by_case(SAMPLES["float32"]))
def test_hand_backward_matches_jax_grad_float32(name):
    _close(name, "float32", "batch 3")


@pytest.mark.slow
@pytest.mark.parametrize("name", _by_case(SAMPLES["small_batches"]))
@pytest.mark.parametrize("batch", [1, 2])
def test_small_batches(name, batch):
    _close(name, "float64", f"batch {batch}", "transforms")


@pytest.mark.slow
@pytest.mark.parametrize("name", _by_case(SAMPLES["finite_differences"]))
def test_finite_differences(name):
    gap = results(name, "float64", "transforms")["finite_differences"]
    assert gap < 1e-6, gap


@pytest.mark.slow
@pytest.mark.parametrize("name", _by_case(SAMPLES["per_example"]))
def test_vmap_per_example_gradients(name):
    _close(name, "float64", "per_example", "transforms")


@pytest.mark.slow
@pytest.mark.parametrize("name", _by_case(SAMPLES["grad_of_grad"]))
def test_grad_of_grad(name):
    _close(name, "float64", "grad_of_grad", "transforms")


# --------------------------------------------------------------------------- batch_norm


def test_batch_norm_running_statistics_follow_torch():
    # Two features over a batch of 4. Feature 0: 1, 2, 3, 6 -> mean 3, biased var
    # (4 + 1 + 0 + 9) / 4 = 3.5, unbiased 14 / 3. Feature 1: all 5 -> mean 5, var 0.
    # torch.nn.BatchNorm1d(momentum=0.1) from mean 0, var 1: running_mean = 0.1 * mean,
    # running_var = 0.9 * 1 + 0.1 * unbiased var.
    x = jnp.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [6.0, 5.0]])
    layer = L.batch_norm(momentum=0.1, eps=1e-5)
    _, params, state = layer.init(jax.random.key(0), x.shape)
    out, _, new = layer.forward(params, state, x, train=True, key=None)
    np.testing.assert_allclose(new["mean"], [0.3, 0.5], rtol=1e-6)
    np.testing.assert_allclose(new["var"], [0.9 + 0.1 * 14 / 3, 0.9], rtol=1e-6)
    # The output is normalized with the biased variance: (1 - 3) / sqrt(3.5 + eps).
    np.testing.assert_allclose(out[0, 0], -2 / np.sqrt(3.5 + 1e-5), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-6)
    # Eval mode uses the running statistics: (x - 0.3) / sqrt(var + eps) for feature 0.
    evaluated, _, same = layer.forward(params, new, x, train=False, key=None)
    np.testing.assert_allclose(
        evaluated[:, 0], (x[:, 0] - 0.3) / np.sqrt(0.9 + 0.1 * 14 / 3 + 1e-5), rtol=1e-6
    )
    assert same is new


def test_batch_norm_state_keeps_its_dtype_in_a_scan():
    layer = L.batch_norm()
    _, params, state = layer.init(jax.random.key(0), (8, 3), jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (5, 8, 3), jnp.bfloat16)

    def body(s, x):
        _, _, s = layer.forward(jax.tree_util.tree_map(lambda p: p.astype(x.dtype), params), s,
                                x, train=True, key=None)  # fmt: skip
        return s, None

    final, _ = jax.lax.scan(body, state, xs)
    assert all(v.dtype == jnp.float32 for v in final.values())


# ------------------------------------------------------------------------ bernoulli_gate


def test_bernoulli_gate_forward_equals_its_definition_and_only_the_definition_trains():
    gate = L.bernoulli_gate()
    _, params, state = gate.init(jax.random.key(0), (64, 5))
    params = {"logits": jnp.array([-2.0, -0.5, 0.5, 1.0, 3.0])}
    x = jax.random.normal(jax.random.key(1), (64, 5))
    key = jax.random.key(2)
    out, _, _ = gate.forward(params, state, x, train=True, key=key)
    by_definition, _ = L.apply(gate, params, state, x, train=True, key=key)
    np.testing.assert_array_equal(out, by_definition)  # the same sample, the same value

    def loss(layer, p):
        return jnp.sum(L.apply(layer, p, state, x, train=True, key=key)[0] * x)

    sampled = jax.grad(functools.partial(loss, gate._replace(definition=None)))(params)
    assert not np.any(sampled["logits"])  # jax.grad of the sample: exactly zero
    straight_through = jax.grad(functools.partial(loss, gate))(params)
    assert np.all(straight_through["logits"] > 0)  # y . x rewards every open gate


def test_bernoulli_gate_opens_with_probability_sigmoid_in_train_and_by_sign_in_eval():
    gate = L.bernoulli_gate()
    logits = jnp.array([-2.0, 0.0, 1.0, 3.0])
    params, x = {"logits": logits}, jnp.ones((20000, 4))
    out, _, _ = gate.forward(params, {}, x, train=True, key=jax.random.key(0))
    np.testing.assert_allclose(out.mean(0), jax.nn.sigmoid(logits), atol=0.01)
    evaluated, _, _ = gate.forward(params, {}, x, train=False)
    np.testing.assert_array_equal(evaluated[0], [0.0, 0.0, 1.0, 1.0])  # sigmoid(0) = 0.5 is shut
    with pytest.raises(L.LayerError, match="needs a PRNG key"):
        gate.forward(params, {}, x, train=True, key=None)
    with pytest.raises(L.LayerError, match=r"expected \[\.\.\., 4\]"):
        gate.forward(params, {}, jnp.ones((2, 3)), train=False)


# ----------------------------------------------------------------------------- errors


def test_bad_input_names_the_layer():
    net = L.serial(L.dense(4), L.relu(), L.dense(3))
    _, params, state = net.init(jax.random.key(0), (2, 5))
    wrong_width = [params[0], {}, {"w": jnp.ones((5, 3))}]
    with pytest.raises(L.LayerError, match=r"layer 2 \(dense\).*expected \[\.\.\., 5\]"):
        net.forward(wrong_width, state, jnp.ones((2, 5)), train=False, key=None)
    with pytest.raises(TypeError, match=r"layer 0 \(dense\).*bfloat16.*cast with"):
        net.forward(params, state, jnp.ones((2, 5), jnp.bfloat16), train=False, key=None)
    with pytest.raises(L.LayerError, match="one entry per layer"):
        net.forward(params[:2], state, jnp.ones((2, 5)), train=False, key=None)
    with pytest.raises(L.LayerError, match="needs a PRNG key"):
        L.dropout(0.5).forward({}, {}, jnp.ones((2, 3)), train=True, key=None)
    with pytest.raises(TypeError, match="expected integer ids"):
        L.embedding(5, 2).forward({"table": jnp.ones((5, 2))}, {}, jnp.ones(3), train=False)
    with pytest.raises(L.LayerError, match=r"ids must lie in \[0, 5\)"):
        L.embedding(5, 2).forward({"table": jnp.ones((5, 2))}, {}, jnp.array([0, 5]))
    with pytest.raises(ValueError, match="rate"):
        L.dropout(1.0)
    with pytest.raises(L.LayerError, match="keep the shape"):
        L.residual(L.dense(3)).init(jax.random.key(0), (2, 4))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: L.dense(True), ValueError, "dense: features=True must be a positive int"),
        (lambda: L.dense(4, bias="no"), TypeError, "dense: bias='no' must be True or False"),
        (lambda: L.embedding(5, False), ValueError, "embedding: features=False must be a positive"),
        (lambda: L.general_relu(leak=float("nan")), ValueError, "leak=nan must be finite"),
        (lambda: L.general_relu(maxv="6"), TypeError, "maxv='6' must be a real number, not str"),
        (lambda: L.leaky_relu(float("inf")), ValueError, "negative_slope=inf must be finite"),
        (lambda: L.batch_norm(eps=-1), ValueError, r"batch_norm: eps=-1.0 must be > 0"),
        (lambda: L.batch_norm(momentum=None), TypeError, "momentum=None must be a real number"),
        (lambda: L.layer_norm(eps=0.0), ValueError, r"layer_norm: eps=0.0 must be > 0"),
        (lambda: L.dropout("0.5"), TypeError, "dropout: rate='0.5' must be a real number, not str"),
        (lambda: L.dropout(True), TypeError, "dropout: rate=True must be a real number, not bool"),
        (lambda: L.dropout(float("nan")), ValueError, "dropout: rate=nan must be finite"),
        (lambda: L.bernoulli_gate(init_logit=[1.0]), TypeError, "init_logit=.* a real number"),
    ],
)
def test_nonsense_constructor_arguments_are_refused_naming_the_layer(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_zero_width_input_is_refused_by_dense_init():
    with pytest.raises(L.LayerError, match=r"dense: input_shape=\(8, 0\) has no features"):
        L.serial(L.dense(4)).init(jax.random.key(0), (8, 0))


def test_dense_takes_a_callable_initializer_and_bias_false_has_no_b():
    init = jax.nn.initializers.constant(0.5)
    _, params, _ = L.dense(3, bias=False, init=init).init(jax.random.key(0), (2, 4))
    assert set(params) == {"w"} and float(params["w"][0, 0]) == 0.5


def test_nan_stays_nan_so_a_diverged_layer_is_seen():
    x = jnp.array([jnp.nan, -1.0, 2.0])
    for layer in (L.relu(), L.leaky_relu(), L.general_relu(leak=0.1, sub=0.4, maxv=1.0)):
        out, _, _ = layer.forward({}, {}, x, train=False, key=None)
        assert np.isnan(out[0]) and not np.isnan(out[1:]).any(), layer.name


def test_layer_norm_takes_a_single_example_without_a_batch_axis():
    layer = L.layer_norm()
    _, params, state = layer.init(jax.random.key(0), (4, 5))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    batched, _, _ = layer.forward(params, state, x, train=False, key=None)
    one = jax.vmap(lambda row: layer.forward(params, state, row, train=False, key=None)[0])(x)
    np.testing.assert_allclose(one, batched, rtol=1e-6)
