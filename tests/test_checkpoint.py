"""Checkpoints: non-finite states refused, the last two kept, the newest readable restored."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnet.training import checkpoint, loop


def _state(value=1.0):
    params = {"w": jnp.full((3, 2), value), "b": jnp.zeros(2)}
    return loop.init_state(params, optax.adam(1e-3), jax.random.key(0))


def test_nonfinite_params_or_optimizer_state_are_refused_and_the_old_file_kept(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, _state(), {"epoch": 1})
    good = path.read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match=r"non-finite.*\['w'\].*allow_nonfinite"):
        checkpoint.save(path, _state(jnp.nan), {"epoch": 2})
    state = _state()
    mu = state.opt_state[0].mu
    bad_opt = state._replace(opt_state=(state.opt_state[0]._replace(mu={**mu, "b": mu["b"] / 0}),
                                        *state.opt_state[1:]))  # fmt: skip
    with pytest.raises(checkpoint.CheckpointError, match=r"mu"):
        checkpoint.save(path, bad_opt, {"epoch": 2}, keep=2)
    assert path.read_bytes() == good and not (tmp_path / "checkpoint.1.npz").exists()
    checkpoint.save(path, _state(jnp.inf), {"epoch": 3}, allow_nonfinite=True)
    restored, meta = checkpoint.restore(path, _state(), allow_nonfinite=True)
    assert meta == {"epoch": 3} and np.isinf(restored.params["w"]).all()


def test_restore_refuses_nonfinite_values_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, _state(jnp.nan), {"epoch": 1}, allow_nonfinite=True)
    with pytest.raises(checkpoint.CheckpointError, match=rf"^{path}: holds non-finite .*\['w'\]"):
        checkpoint.restore(path, _state())
    with pytest.raises(checkpoint.CheckpointError, match="damaged or written by other code"):
        checkpoint.restore_newest(path, _state())


def test_keep_two_rotates_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.npz"
    for epoch in (1, 2, 3):
        checkpoint.save(path, _state(float(epoch)), {"epoch": epoch}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.1.npz", "checkpoint.npz"]
    assert checkpoint.restore(path, _state())[1] == {"epoch": 3}
    assert checkpoint.restore(tmp_path / "checkpoint.1.npz", _state())[1] == {"epoch": 2}
    checkpoint.save(tmp_path / "solo.npz", _state(), {}, keep=1)
    checkpoint.save(tmp_path / "solo.npz", _state(), {}, keep=1)
    assert not (tmp_path / "solo.1.npz").exists()


def test_restore_newest_falls_back_to_the_older_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.npz"
    for epoch in (1, 2):
        checkpoint.save(path, _state(float(epoch)), {"epoch": epoch}, keep=2)
    state, meta, used, skipped = checkpoint.restore_newest(path, _state())
    assert meta["epoch"] == 2 and used == path and skipped == []
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a disk error or a bad copy
    state, meta, used, skipped = checkpoint.restore_newest(path, _state())
    assert meta["epoch"] == 1 and used.name == "checkpoint.1.npz"
    assert len(skipped) == 1 and "checkpoint.npz: not a readable" in skipped[0]
    np.testing.assert_array_equal(state.params["w"], np.ones((3, 2)))
    used.write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint.*1.npz: not a"):
        checkpoint.restore_newest(path, _state())
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint files"):
        checkpoint.restore_newest(tmp_path / "absent.npz", _state())


def test_restore_newest_does_not_skip_a_checkpoint_of_another_run(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, _state(), {"epoch": 1}, keep=2)
    checkpoint.save(path, _state(), {"epoch": 2}, keep=2)
    other = loop.init_state({"w": jnp.zeros((3, 2))}, optax.sgd(0.1), jax.random.key(0))
    with pytest.raises(checkpoint.CheckpointError, match="do not match this run"):
        checkpoint.restore_newest(path, other)
