"""Checkpoints: a `loop.TrainState` and a small JSON record in one .npz, written atomically.

`save` writes a temporary file beside the target, then renames it, so a stopped run leaves
the previous checkpoint or the new one, never half of one. With `keep=2` the checkpoint it
replaces moves to `<stem>.1.npz` first (as orbax's `max_to_keep`), and `restore_newest`
falls back to it when the newest cannot be read. `save` refuses non-finite params,
optimizer state and network state, so a diverged run never replaces a good checkpoint, and
`restore` refuses them in turn (such a file was damaged or written by other code). `restore`
puts the arrays back into a template state of the same structure.

Test hook: the environment variable JAXNET_CHECKPOINT_WRITE_DELAY (seconds) makes `save`
pause halfway through writing its temporary file, so that a test can kill a process
during a write.
"""

import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnet.training import files, loop

_META = "meta_json"
WRITE_DELAY_ENV = "JAXNET_CHECKPOINT_WRITE_DELAY"


class CheckpointError(ValueError):
    """A checkpoint is unreadable, does not fit the run restoring it, or is not finite."""


def _flat(state: loop.TrainState) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(state))]


def rotated_paths(path: str | os.PathLike, keep: int) -> list[Path]:
    """[path, <stem>.1.npz, ..., <stem>.{keep-1}.npz]: the newest checkpoint first."""
    path = Path(path)
    return [path] + [path.with_name(f"{path.stem}.{i}{path.suffix}") for i in range(1, keep)]


def _nonfinite_leaves(state: loop.TrainState) -> list[str]:
    named = jax.tree_util.tree_leaves_with_path(
        {"params": state.params, "opt_state": state.opt_state, "net_state": state.net_state}
    )
    return [
        jax.tree_util.keystr(key)
        for key, leaf in named
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact) and not np.isfinite(leaf).all()
    ]


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def save(
    path: str | os.PathLike,
    state: loop.TrainState,
    meta: dict[str, Any],
    *,
    keep: int = 1,
    allow_nonfinite: bool = False,
) -> Path:
    """Writes state and meta (JSON-serialisable) to path atomically.

    Args:
      path: the newest checkpoint's file, e.g. `run/checkpoint.npz`.
      state: the training state.
      meta: a JSON-serialisable record saved beside it (config, epoch, ...).
      keep: how many checkpoints to keep: the one that path held moves to `<stem>.1.npz`,
        that one to `<stem>.2.npz`, and so on up to keep - 1.
      allow_nonfinite: save params or optimizer or network state holding NaN or inf all
        the same.

    Raises:
      CheckpointError: non-finite params, optimizer or network state, unless allow_nonfinite.
    """
    state = jax.device_get(state)
    bad = [] if allow_nonfinite else _nonfinite_leaves(state)
    if bad:
        raise CheckpointError(
            f"refusing to write {path}: non-finite values (NaN or inf) in {_listed(bad)}; the "
            "previous checkpoint is kept. Pass allow_nonfinite=True to save them all the same."
        )
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(_flat(state))}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{_META: np.array(json.dumps(meta, sort_keys=True))})
    return _write_rotating(rotated_paths(path, keep), buffer.getvalue())


def _write_rotating(paths: list[Path], data: bytes) -> Path:
    """Writes data to paths[0] atomically, moving each older file one place down first."""
    delay = float(os.environ.get(WRITE_DELAY_ENV, 0))
    with files.atomic_writer(paths[0]) as f:
        f.write(data[: len(data) // 2])
        if delay:
            f.flush()
            time.sleep(delay)
        f.write(data[len(data) // 2 :])
        # Rotate only once the new file is complete: a stop here loses nothing.
        for newer, older in reversed(list(zip(paths, paths[1:]))):
            if newer.exists():
                os.replace(newer, older)
    return paths[0]


def _read(path) -> tuple[list[np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f[_META]))
            leaves = [f[k] for k in sorted(k for k in f.files if k.startswith("leaf_"))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable jaxnet checkpoint ({e}).") from None
    return leaves, meta


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON record saved with a checkpoint (e.g. its epoch).

    Raises:
      CheckpointError: the file is unreadable.
    """
    return _read(path)[1]


def restore(
    path: str | os.PathLike, template: loop.TrainState, *, allow_nonfinite: bool = False
) -> tuple[loop.TrainState, dict]:
    """(state, meta) read from path, shaped like template (a fresh state of the same run).

    Raises:
      CheckpointError: unreadable; its arrays do not match the template's shapes and
        dtypes (it was written by a run with another model or optimizer); or they hold
        NaN or inf, unless allow_nonfinite.
    """
    return _fit(path, *_read(path), template, allow_nonfinite)


def _fit(path, leaves: list[np.ndarray], meta: dict, template, allow_nonfinite: bool = False):
    want, treedef = jax.tree_util.tree_flatten(template)
    got = [(a.shape, a.dtype) for a in leaves]
    expected = [(np.shape(a), np.asarray(a).dtype) for a in want]
    if got != expected:
        raise CheckpointError(
            f"{path}: holds {len(got)} arrays that do not match this run's {len(expected)} "
            "(another model, optimizer or dtype wrote it); use another --output_dir or the "
            "flags of the run that wrote it."
        )
    state = jax.tree_util.tree_unflatten(treedef, leaves)
    bad = [] if allow_nonfinite else _nonfinite_leaves(state)
    if bad:
        raise CheckpointError(
            f"{path}: holds non-finite values (NaN or inf) in {_listed(bad)}, which save never "
            "writes: the file was damaged or written by other code. Delete it to resume from "
            "the checkpoint before it, or start afresh."
        )
    return state, meta


def restore_newest(
    path: str | os.PathLike,
    template: loop.TrainState,
    keep: int = 2,
    check: Callable[[dict, Path], None] | None = None,
    *,
    allow_nonfinite: bool = False,
) -> tuple[loop.TrainState, dict, Path, list[str]]:
    """(state, meta, the file read, why each newer one was skipped): the newest readable one.

    Tries path, then `<stem>.1.npz` and so on (see `save`), skipping absent and unreadable
    files. check(meta, file), if given, runs on the first readable one before its arrays
    are fitted to the template (say, to name the settings that differ); what it raises
    passes through.

    Raises:
      CheckpointError: none of them is readable, with the reason for each; or the first
        readable one does not match the template, or holds NaN or inf (unless
        allow_nonfinite).
    """
    skipped = []
    for candidate in rotated_paths(path, keep):
        if not candidate.is_file():
            continue
        try:
            leaves, meta = _read(candidate)
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        if check is not None:
            check(meta, candidate)
        return *_fit(candidate, leaves, meta, template, allow_nonfinite), candidate, skipped
    found = " ".join(skipped) if skipped else "no checkpoint files."
    raise CheckpointError(f"no readable checkpoint at {path} or the {keep - 1} before it: {found} "
                          "Delete them to start afresh.")  # fmt: skip


def restore_run(
    path: str | os.PathLike,
    template: loop.TrainState,
    keep: int,
    check: Callable[[dict, Path], None],
    log: Callable[[str], None],
) -> tuple[loop.TrainState | None, dict | None, Path | None]:
    """A run's newest usable checkpoint, as `restore_newest` finds it: (state, meta, the
    file read), or (None, None, None) when there is none. Each newer file skipped is
    logged; an error says how to start afresh instead."""
    if not any(p.is_file() for p in rotated_paths(path, keep)):
        return None, None, None
    try:
        state, meta, used, skipped = restore_newest(path, template, keep, check)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (--overwrite starts afresh; another --output_dir leaves "
                              "this one as it is.)") from None  # fmt: skip
    for why in skipped:
        log(f"{why} Resuming from the older {used.name}.")
    return state, meta, used
