"""Shared test helpers."""

import jax
import jax.numpy as jnp
import pytest
from absl import flags

import jaxnet

# Experiment scripts define absl flags; tests set them with flagsaver, never via sys.argv.
flags.FLAGS.mark_as_parsed()

# Whole files of end-to-end runs: `pytest -m "not slow"` is the inner loop without them.
SLOW_FILES = {
    "test_experiments.py",
    "test_parallel.py",
    "test_kill_and_resume.py",
    "test_train_mlp.py",
    "test_lock.py",
    "test_profiling.py",
    "test_readme.py",
    "test_interop.py",
    "test_makemore.py",
    "test_trainer.py",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


# Explicit tolerances for hand-vs-automatic gradients, per dtype.
TOLERANCES = {
    "float64": dict(rtol=1e-10, atol=1e-12),
    "float32": dict(rtol=2e-5, atol=1e-6),
}
LOSSES = ("mse", "sum_squares", "cross_entropy")
GRADS = ("fused", "ops", "autodiff")


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    """Runs a test in float64 (inside jax.enable_x64) and in float32."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield request.param
    else:
        yield request.param


def away_from_zero(key, params, scale=0.1):
    """Adds noise to every leaf, biases included: a zero init can hide a wrong backward."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [p + scale * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)]
    )


def make_problem(sizes, batch, loss, dtype, seed=0, bias=True):
    """(params moved away from zero, x, y) for an MLP of `sizes` and the named loss."""
    keys = jax.random.split(jax.random.key(seed), 4)
    params = jaxnet.init_mlp(keys[0], sizes, init="kaiming_normal", bias=bias, dtype=dtype)
    params = away_from_zero(keys[1], params)
    x = jax.random.normal(keys[2], (batch, sizes[0]), dtype)
    if loss == "cross_entropy":
        y = jax.random.randint(keys[3], (batch,), 0, sizes[-1])
    else:
        y = jax.random.normal(keys[3], (batch, sizes[-1]), dtype)
    return params, x, y


def as_dtype(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)
