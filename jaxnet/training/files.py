"""Files written atomically: a temporary file in the same folder, then a rename."""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file that becomes `path` only when the `with` block ends without error.

    Writes go to a temporary file in the same folder (created if needed), which is synced
    and renamed over `path` at the end; an exception removes it and leaves `path` as it
    was. The file gets the usual permissions (0o666 less the umask), not the 0o600 of a
    temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` so that a reader sees the old file or the new, never half."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def finite(obj: Any) -> Any:
    """obj with every non-finite float spelled "inf", "-inf" or "nan": strict JSON has none."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as indented, strict JSON to `path`, atomically."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False)
    return write_bytes_atomic(path, (text + "\n").encode())
