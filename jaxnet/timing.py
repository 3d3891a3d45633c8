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
    for _ in range(warmup):
        jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)
