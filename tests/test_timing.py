"""jaxnet.timing: interleaved rounds in alternating order, and paired ratios."""

import pytest

from jaxnet import timing


def test_interleaved_times_alternates_the_order_and_times_every_round():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = timing.interleaved_times(calls, repeats=3, warmup=1)
    assert order == [*"abc", *"abc", *"cba", *"abc"]  # warm-up, then rounds 0, 1, 2
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())
    assert set(timing.interleaved_medians(calls, repeats=3)) == set("abc")
    with pytest.raises(ValueError, match="repeats=0"):
        timing.interleaved_times(calls, repeats=0)


def test_ratio_spread_summarises_paired_ratios():
    spread = timing.ratio_spread([1.0, 4.0, 9.0, 8.0], [1.0, 2.0, 3.0, 2.0])  # 1, 2, 3, 4
    assert spread == {"median": 2.5, "q1": 1.75, "q3": 3.25, "min": 1.0, "max": 4.0}
    # Paired, not sorted apart: the medians of the lists would give 6 / 2 = 3.
    with pytest.raises(ValueError, match="3 and 2 rounds"):
        timing.ratio_spread([1.0, 2.0, 3.0], [1.0, 2.0])
