"""check_layer: every layer of the layers registry passes the full battery, train or eval.

The registry (tests/test_layers.py) lists each layer with its input and a deliberately
wrong backward; a sample of those wrong backwards is caught, and named.
"""

import jax
import jax.numpy as jnp
import pytest
from test_layers import CASES

from jaxnet import gradcheck
from jaxnet import layers as L

BATCH = 3


def _run(name, wrong=False, **kwargs):
    case = CASES[name]
    layer = case.wrong(case.make()) if wrong else case.make()
    shape = (BATCH, *case.shape)
    x = jax.random.randint(jax.random.key(1), shape, 0, 7) if case.integer else None
    state = None
    if name.startswith("batch_norm"):  # running statistics away from their init
        _, _, state = layer.init(jax.random.key(0), shape)
        state = {"mean": 0.3 * jnp.ones(case.shape), "var": 1.5 * jnp.ones(case.shape)}
    mode = "train" if case.train else "eval"
    return gradcheck.check_layer(layer, shape, x=x, state=state, input_scale=case.input_scale,
                                 modes=(mode,), raise_on_failure=False, **kwargs)  # fmt: skip


# The fast subset (-m "not slow") runs the battery on a fixed sample of the registry, one
# layer of each kind (dense, an activation, a norm, running statistics in eval mode,
# integer ids, a combinator, a straight-through gate); the full suite on every layer.
FAST = ["dense", "gelu", "layer_norm", "batch_norm_eval", "embedding", "serial",
        "bernoulli_gate_train"]  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in CASES]
)
def test_every_registry_layer_passes_the_full_battery(name):
    report = _run(name)
    assert report.passed, str(report)
    checks = {row.check.split()[-1] for row in report.rows}
    assert checks >= {"reference", "finite_difference", "zero_cotangent", *gradcheck.TRANSFORMS}
    skipped = {row.check.split()[-1] for row in report.rows if row.verdict == "skipped"}
    if CASES[name].make().definition is not None:  # straight-through: a convention
        assert skipped == {"finite_difference", "rev_over_rev", "fwd_over_rev"}


@pytest.mark.parametrize("name", ["batch_norm_train", "embedding", "flatten"])
def test_a_sample_of_the_registry_wrong_backwards_is_caught(name):
    report = _run(name, wrong=True, order=1, transforms=())
    assert {"reference", "finite_difference"} & {c.split()[-1] for c in report.failing_checks()}


def test_train_and_eval_both_run_and_strict_flags_a_dead_relu_net():
    net = L.serial(L.dense(4), L.relu(), L.dropout(0.5), L.dense(2))  # dropout: two modes
    report = gradcheck.check_layer(net, (3, 5), order=1, transforms=())
    assert report.passed and {r.check.split()[0] for r in report.rows} == {"train", "eval"}
    with pytest.raises(gradcheck.GradcheckError, match="every input of .* is at most 0") as e:
        gradcheck.check_layer(L.relu(), (3, 5), x=-jnp.ones((3, 5)), order=1, transforms=(),
                              modes=("eval",), strict=True)  # fmt: skip
    assert e.value.report.passed and e.value.report.weak
    assert any(note.startswith("eval: weak: every input of") for note in e.value.report.notes)
