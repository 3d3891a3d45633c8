"""Initializers: empirical std within 2% of theory for every scheme and mode."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import initializers

FAN_IN, FAN_OUT = 800, 400
SHAPE = (FAN_IN, FAN_OUT)
KEY = jax.random.key(42)

THEORY = [
    ("normal", {}, 1.0),
    ("normal", {"truncated": True}, 1.0),
    ("lecun_normal", {}, 1 / math.sqrt(FAN_IN)),
    ("lecun_normal", {"truncated": True}, 1 / math.sqrt(FAN_IN)),
    ("glorot_normal", {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("glorot_normal", {"truncated": True}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("glorot_uniform", {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("kaiming_normal", {}, math.sqrt(2 / FAN_IN)),
    ("kaiming_normal", {"mode": "fan_out"}, math.sqrt(2 / FAN_OUT)),
    ("kaiming_normal", {"truncated": True}, math.sqrt(2 / FAN_IN)),
    ("kaiming_normal", {"mode": "fan_out", "truncated": True}, math.sqrt(2 / FAN_OUT)),
    ("kaiming_normal", {"nonlinearity": "linear"}, 1 / math.sqrt(FAN_IN)),
    ("kaiming_uniform", {}, math.sqrt(2 / FAN_IN)),
    ("kaiming_uniform", {"mode": "fan_out"}, math.sqrt(2 / FAN_OUT)),
    ("torch_default", {}, 1 / math.sqrt(3 * FAN_IN)),
]


@pytest.mark.parametrize("name, kwargs, std", THEORY, ids=lambda v: str(v))
def test_std_matches_theory(name, kwargs, std):
    w = np.asarray(initializers.get(name)(KEY, SHAPE, jnp.float32, **kwargs))
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.std() / std - 1) < 0.02, (name, kwargs, w.std(), std)
    assert abs(w.mean()) < 0.02 * std


def test_uniform_bounds():
    w = initializers.torch_default(KEY, SHAPE)
    assert float(jnp.max(jnp.abs(w))) <= 1 / math.sqrt(FAN_IN)
    w = initializers.glorot_uniform(KEY, SHAPE)
    assert float(jnp.max(jnp.abs(w))) <= math.sqrt(6 / (FAN_IN + FAN_OUT)) + 1e-7


def test_untruncated_by_default_truncated_on_request():
    w = initializers.normal(KEY, (1000, 1000))
    assert float(jnp.max(jnp.abs(w))) > 4  # the lessons' randn has tails
    t = initializers.normal(KEY, (1000, 1000), truncated=True)
    assert float(jnp.max(jnp.abs(t))) <= 2 / 0.87962566103423978 + 1e-5


def test_zeros_and_dtype():
    assert not jnp.any(initializers.zeros(KEY, (3, 4)))
    with jax.enable_x64(True):
        assert initializers.kaiming_normal(KEY, (3, 4), jnp.float64).dtype == jnp.float64


def test_receptive_field_fans():
    assert initializers.fans((3, 3, 16, 32)) == (9 * 16, 9 * 32)


def test_gain():
    assert initializers.gain("relu") == pytest.approx(math.sqrt(2))
    assert initializers.gain("tanh") == pytest.approx(5 / 3)
    assert initializers.gain("linear") == 1.0
    assert initializers.gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert initializers.gain("leaky_relu", a=math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="unknown initializer 'xavier'.*kaiming_normal"):
        initializers.get("xavier")
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        initializers.gain("swish")
    with pytest.raises(ValueError, match="rank >= 2"):
        initializers.kaiming_normal(KEY, (10,))
    with pytest.raises(ValueError, match="mode must be"):
        initializers.kaiming_normal(KEY, SHAPE, mode="fan_mid")
