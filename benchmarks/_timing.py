"""What the benchmark scripts share: timing a function the same way everywhere."""

from __future__ import annotations

import statistics
import time


def median_time(function, repeats):
    """Median seconds of `repeats` calls of `function` after one warm-up call.

    The warm-up absorbs tracing and memory allocation. Returns the median and
    what the warm-up call returned (every call computes the same result).
    """
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def print_timings(rows, repeats, ratio_label, ratio, indent=""):
    """Prints `(label, seconds)` rows side by side, then `ratio` named `ratio_label`."""
    width = max(len(label) for label, _ in rows)
    print(f"{indent}median of {repeats} runs after 1 warm-up:")
    for label, seconds in rows:
        print(f"{indent}  {label:<{width}}  {seconds * 1e3:9.1f} ms")
    print(f"{indent}  ratio {ratio_label}: {ratio:.1f}x")
