"""Wall-clock timing of JAX calls: warm-up excluded, block_until_ready, medians."""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def median_seconds(f: Callable[..., Any], *args, repeats: int = 10, warmup: int = 1) -> float:
    """Median wall time of f(*args) over `repeats` runs after `warmup` untimed ones.

    Each run waits for its result (`jax.block_until_ready`), so asynchronous dispatch is
    not mistaken for speed; the warm-up runs absorb compilation.
    """
    return interleaved_medians({"f": lambda: f(*args)}, repeats=repeats, warmup=warmup)["f"]


def interleaved_times(
    calls: dict[str, Callable[[], Any]], *, repeats: int = 10, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds of each zero-argument call in each of `repeats` rounds: A B C, C B A, A B C ...

    Interleaving spreads drift in the machine (frequency, other load) over every call
    alike, so their ratios stay fair; every other round runs in reverse so that no call
    always goes first. Calls next to each other in `calls` run back to back in every round,
    so the ratio of their times in one round is a paired measurement. Warm-up rounds,
    compilation included, are not timed.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1.")
    for _ in range(warmup):
        for call in calls.values():
            jax.block_until_ready(call())
    times = {name: [] for name in calls}
    for round_ in range(repeats):
        for name, call in list(calls.items())[:: 1 if round_ % 2 == 0 else -1]:
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(
    calls: dict[str, Callable[[], Any]], *, repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each zero-argument call, timed in turn (see `interleaved_times`)."""
    times = interleaved_times(calls, repeats=repeats, warmup=warmup)
    return {name: statistics.median(t) for name, t in times.items()}


def ratio_spread(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """The per-round ratios numerator[i] / denominator[i] of paired times, summarised:
    {"median", "q1", "q3", "min", "max"} (q1 and q3 bound the middle half)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"paired times need equal, non-empty lists, got {len(numerator)} and "
            f"{len(denominator)} rounds."
        )
    ratios = np.asarray(numerator) / np.asarray(denominator)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(ratios.min()), "max": float(ratios.max())}  # fmt: skip
