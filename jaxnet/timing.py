"""Wall-clock timing of JAX calls: warm-up excluded, block_until_ready, medians."""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def median_seconds(f: Callable[..., Any], *args, repeats: int = 10, warmup: int = 1) -> float:
    """Median wall time of f(*args) over `repeats` runs after `warmup` untimed ones.

    Each run waits for its result (`jax.block_until_ready`), so asynchronous dispatch is
    not mistaken for speed; the warm-up runs absorb compilation.
    """
    return interleaved_medians({"f": lambda: f(*args)}, repeats=repeats, warmup=warmup)["f"]


def interleaved_medians(
    calls: dict[str, Callable[[], Any]], *, repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each zero-argument call, timed in turn: A B C A B C ...

    Interleaving spreads drift in the machine (frequency, other load) over every call
    alike, so their ratios stay fair. Warm-up rounds, compilation included, are not timed.
    """
    for _ in range(warmup):
        for call in calls.values():
            jax.block_until_ready(call())
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
