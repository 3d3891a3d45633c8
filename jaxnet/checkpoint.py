"""Checkpoints: a `train.TrainState` and a small JSON record in one .npz, written atomically.

`save` writes a temporary file beside the target, then renames it, so a stopped run leaves
the previous checkpoint or the new one, never half of one. `restore` puts the arrays back
into a template state of the same structure.
"""

import io as _io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnet import io, train

_META = "meta_json"


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the run restoring it."""


def _flat(state: train.TrainState) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(state))]


def save(path: str | os.PathLike, state: train.TrainState, meta: dict[str, Any]) -> Path:
    """Writes state and meta (JSON-serialisable) to path atomically."""
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(_flat(state))}
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays, **{_META: np.array(json.dumps(meta, sort_keys=True))})
    return io.write_bytes_atomic(path, buffer.getvalue())


def _read(path) -> tuple[list[np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f[_META]))
            leaves = [f[k] for k in sorted(k for k in f.files if k.startswith("leaf_"))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable jaxnet checkpoint ({e}).") from None
    return leaves, meta


def restore(path: str | os.PathLike, template: train.TrainState) -> tuple[train.TrainState, dict]:
    """(state, meta) read from path, shaped like template (a fresh state of the same run).

    Raises:
      CheckpointError: unreadable, or its arrays do not match the template's shapes and
        dtypes (it was written by a run with another model or optimizer).
    """
    leaves, meta = _read(path)
    want, treedef = jax.tree_util.tree_flatten(template)
    got = [(a.shape, a.dtype) for a in leaves]
    expected = [(np.shape(a), np.asarray(a).dtype) for a in want]
    if got != expected:
        raise CheckpointError(
            f"{path}: holds {len(got)} arrays that do not match this run's {len(expected)} "
            "(another model, optimizer or dtype wrote it); use another --output_dir or the "
            "flags of the run that wrote it."
        )
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
