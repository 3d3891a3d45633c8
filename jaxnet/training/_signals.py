"""SIGINT and SIGTERM as a request to stop between epochs, agreed by every process."""

import contextlib
import signal
import threading
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[list[int]]:
    """Turns SIGINT and SIGTERM into a request, `received`, read between epochs.

    A second signal stops at once (KeyboardInterrupt). Outside the main thread, where
    Python cannot take signals, nothing is installed.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        del frame
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_requested(received: list[int]) -> int:
    """The signal number if any process received one (all processes agree), else 0."""
    signum = received[0] if received else 0
    if jax.process_count() == 1:
        return signum
    return int(np.max(multihost_utils.process_allgather(np.int32(signum))))


def stopped(signum: int, after: str, saved) -> str:
    """The message of a run stopped by a signal after `after` (e.g. "epoch 3 of 10"), its
    checkpoint in `saved`."""
    return (f"stopped by {signal.Signals(signum).name} after {after}, saved in {saved}; run "
            "the same command again to continue.")  # fmt: skip
