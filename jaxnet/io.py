"""Files written atomically: a temporary file in the same folder, then a rename."""

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` so that a reader sees the old file or the new, never half.

    The parent folder is created if needed. The file gets the usual permissions (0o666
    less the umask), not the 0o600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
