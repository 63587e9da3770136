"""Interleaved timing rounds: runs compared with each other share the machine's load.

On a shared machine the load drifts between benchmark rows, so runs whose ratio is the result are
timed in the same rounds: each round runs every one of them once, in an order that reverses every
round, and the ratio is taken per round (median and quartiles over rounds).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable
from typing import Any


class InterleavedRounds:
    """Calling it runs one round; ``times[key]`` holds each run's seconds per round, ``outputs[key]`` its last result."""

    def __init__(self, runs: dict[Hashable, Callable[[], Any]]) -> None:
        self.runs, self.order = runs, list(runs)
        self.outputs: dict[Hashable, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the times so far (after a warm-up round)."""
        self.times: dict[Hashable, list[float]] = {key: [] for key in self.runs}

    def __call__(self) -> None:
        for key in self.order:
            t0 = time.perf_counter()
            self.outputs[key] = self.runs[key]()
            self.times[key].append(time.perf_counter() - t0)
        self.order.reverse()


def ratio_quartiles(numerators: list[float], denominators: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) over rounds of numerator / denominator."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(ratios), q[0], q[2]
