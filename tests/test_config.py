"""The run's Config from Python: every field's type checked strictly, with the flag named."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from jaxnet.training import config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden="256"), r"--hidden='256' must list positive widths \(ints\)"),
        (dict(hidden=(256.7,)), r"--hidden=\[256.7\] must list positive widths"),
        (dict(hidden=(True, 3)), r"--hidden=\[True, 3\] must list positive widths"),
        (dict(resume="no"), "--resume='no' must be True or False, not str"),
        (dict(download="false"), "--download='false' must be True or False"),
        (dict(download=1), "--download=1 must be True or False, not int"),
        (dict(epochs=2.5), "--epochs=2.5 must be an int, not float"),
        (dict(epochs=True), "--epochs=True must be an int, not bool"),
        (dict(batch_size="64"), "--batch_size='64' must be an int, not str"),
        (dict(optimizer=None), "--optimizer=None must be a non-empty string, e.g. 'adam'"),
        (dict(loss=""), "--loss='' must be a non-empty string"),
        (dict(dropout=True), "--dropout=True must be a real number, not bool"),
        (dict(learning_rate="0.1"), "--learning_rate='0.1' must be a real number"),
        (dict(learning_rate=float("inf")), "--learning_rate=inf must be finite"),
        (dict(weight_decay=float("nan")), "--weight_decay=nan must be finite"),
        (dict(seed=-1), r"--seed=-1 must lie in \[0, "),
        (dict(data_dir=""), "--data_dir='' must be a folder's path, or None"),
        (dict(optimizer="lbfgs"), "'lbfgs' is not an optax optimizer"),
        (dict(optimizer="add_decayed_weights"), "'add_decayed_weights' is not an optax optimizer"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        config.Config(**overrides)


def test_numpy_scalars_and_paths_become_python_values():
    numbers = dict(hidden=[np.int64(8), 4], learning_rate=np.float32(0.5), epochs=np.int32(3))
    made = config.Config(**numbers, resume=np.bool_(True), data_dir=Path("/d"))
    assert made.hidden == (8, 4) and type(made.hidden[0]) is int
    assert made.learning_rate == 0.5 and type(made.learning_rate) is float
    assert made.epochs == 3 and type(made.epochs) is int
    assert made.resume is True and made.data_dir == "/d"
    assert config.Config(learning_rate=1).learning_rate == 1.0


def test_every_field_has_a_type_check():
    assert set(config._TYPES) == {f.name for f in dataclasses.fields(config.Config)}
