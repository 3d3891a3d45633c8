"""Files written atomically: a temporary file in the same folder, then a rename.

The temporary file of `path` is named `.<path's name>.<8 random characters>.tmp`; a process
killed mid-write leaves one behind, which `remove_temporaries` deletes.
"""

import contextlib
import json
import math
import os
import re
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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """error, or for one that names no file (a full disk: ENOSPC), the same naming path."""
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, f"{error.strerror}: could not write {path} (it keeps its "
                                    "previous contents)")  # fmt: skip


def remove_temporaries(folder: str | os.PathLike, names: list[str]) -> list[Path]:
    """Deletes the temporary files that writes of `names` in folder left behind; their paths.

    Only files named as `atomic_writer` names them (`.<name>.<8 characters>.tmp`) are
    touched. Call it only while no other process writes there (holding the folder's lock).
    """
    pattern = re.compile(rf"\.({'|'.join(map(re.escape, names))})\.[a-z0-9_]{{8}}\.tmp")
    stale = [p for p in Path(folder).iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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


def _nonfinite_back(obj: Any) -> Any:
    """The inverse of `finite`: "inf", "-inf" and "nan" become floats again."""
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _nonfinite_back(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nonfinite_back(v) for v in obj]
    return obj


def parse_json(text: str) -> Any:
    """Parses JSON written through `finite`, with "nan", "inf" and "-inf" read back as floats."""
    return _nonfinite_back(json.loads(text))


def read_run_record(path: str | os.PathLike) -> dict | None:
    """A finished run's JSON record (summary.json, results.json): a dict with a "config"
    dict; None if absent or unreadable (the run then finishes again from its checkpoint)."""
    try:
        record = parse_json(Path(path).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("config"), dict)
    return record if ok else None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as indented, strict JSON to `path`, atomically."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False)
    return write_bytes_atomic(path, (text + "\n").encode())
