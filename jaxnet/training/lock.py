"""One run per folder: a lock file that names the process holding it.

`acquire(folder)` creates `folder/jaxnet.lock`, a JSON record {pid, host, start, token}, in
one atomic step (written to a temporary file, then hard-linked to its name, which fails if
the lock exists) and reads it back; `Lock.release` removes it. A lock left by a process
that is gone (on this host: no such pid, a zombie, or a pid reused by a later process) is
stale: it is moved aside, checked to be the same record, and replaced. A lock held by a
live process, or by another host (which cannot be checked from here), is refused with
`FolderLocked`, naming the folder and the holder. `Lock.verify` checks, before a write,
that the lock is still this run's.
"""

import contextlib
import errno
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import jax

from jaxnet.training import files

LOCK_NAME = "jaxnet.lock"
_TRIES = 5  # a stale lock taken over by another process at the same moment: try again


class FolderLocked(RuntimeError):
    """Another run holds the folder's lock (or took it over)."""


def _process(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from Linux's /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)


def _me() -> dict:
    process = _process(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "start": process and process[1], "token": secrets.token_hex(8)}  # fmt: skip


def _alive(holder: dict) -> bool:
    """Whether the holder may still run: True unless it is provably gone from this host."""
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: nothing here can tell
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    process = _process(holder["pid"])
    if process is None:
        return True
    state, start = process
    return state != "Z" and holder.get("start") in (None, start)  # same pid, same process


def _holder(path: Path) -> dict | None:
    """The lock's record; None if there is no lock.

    Raises:
      FolderLocked: the file is not a jaxnet lock (no run can be named).
    """
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        record = e
    pid = record.get("pid") if isinstance(record, dict) else None
    if not (isinstance(pid, int) and pid > 0):
        raise FolderLocked(f"{path} is not a jaxnet lock ({record!r:.60}); if no run uses "
                           f"{path.parent}, delete it.")  # fmt: skip
    return record


def _create(path: Path, record: dict) -> bool:
    """Creates path holding record, atomically, unless it exists; whether it did."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:  # the holder cleaned our temporary file away: it is there
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        return _create_exclusive(path, record)  # a file system without hard links
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_exclusive(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def _remove_stale(path: Path, stale: dict) -> None:
    """Removes the lock at path if it still holds `stale`; a newer one is put back."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process took it over first
    try:
        moved = json.loads(aside.read_text())
    except (OSError, ValueError):
        moved = None
    if moved != stale:  # a live run's lock, created since we read the stale one
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink()


def _refusal(folder: Path, holder: dict, path: Path) -> FolderLocked:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return FolderLocked(
        f"{folder} is in use by another run (pid {holder['pid']} on host "
        f"{holder.get('host')}, since {since}); wait for it to end or choose another "
        f"--output_dir. If that process is gone, delete {path}."
    )


class Lock(NamedTuple):
    """A held lock: its file and the token written into it."""

    path: Path
    token: str

    def verify(self) -> None:
        """Raises FolderLocked unless the lock file still holds this run's token."""
        holder = _holder(self.path)
        if holder is None or holder.get("token") != self.token:
            now = "is gone" if holder is None else f"names pid {holder['pid']}"
            raise FolderLocked(f"{self.path.parent}: this run's lock {self.path} {now}; "
                               "stopping so that two runs never write there.")  # fmt: skip

    def release(self) -> None:
        """Removes the lock file if it is still this run's."""
        with contextlib.suppress(FolderLocked):
            self.verify()
            self.path.unlink(missing_ok=True)


def acquire(folder: str | os.PathLike) -> Lock:
    """Takes the lock of an existing folder, taking over a stale one.

    Raises:
      FolderLocked: a live run (or one on another host) holds it.
    """
    folder = Path(folder)
    path, me = folder / LOCK_NAME, _me()
    for _ in range(_TRIES):
        if _create(path, me):
            lock = Lock(path, me["token"])
            lock.verify()
            return lock
        holder = _holder(path)
        if holder is not None and _alive(holder):
            raise _refusal(folder, holder, path)
        if holder is not None:
            _remove_stale(path, holder)
    raise FolderLocked(f"{folder}: could not take {path} in {_TRIES} tries, as other runs "
                       "kept taking it; start one run at a time there.")  # fmt: skip


def check_output_folder(
    folder: str | os.PathLike, flag: str = "--output_dir", otherwise: str = ""
) -> None:
    """Creates folder, or refuses one that is a file or cannot be written, before a run.

    The messages name the flag that gave the folder; otherwise, if given, ends them with the
    flag's other choice (e.g. ", or '' to compile afresh each time").
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is a file, not a folder; choose another "
                         f"{flag}{otherwise}.")  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {folder} cannot be created ({e.strerror}); choose "
                         f"another {flag}{otherwise}.") from None  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {folder} is read-only; make it writable or choose "
                         f"another {flag}{otherwise}.")  # fmt: skip


@contextlib.contextmanager
def claim(folder: str | os.PathLike, names: list[str]) -> Iterator["Lock | None"]:
    """A run's output folder on process 0: checked, locked, and cleared of the temporaries
    that a stopped write of one of `names` left; other processes get None."""
    if jax.process_index() != 0:
        yield None
        return
    folder = Path(folder)
    check_output_folder(folder)
    try:
        held = acquire(folder)
    except PermissionError as e:  # writable by mode, yet not (a read-only mount, ACLs)
        raise ValueError(f"--output_dir {folder} cannot be written ({e.strerror}); make "
                         "it writable or choose another --output_dir.") from None  # fmt: skip
    try:
        files.remove_temporaries(folder, [*names, LOCK_NAME])
        yield held
    finally:
        held.release()
