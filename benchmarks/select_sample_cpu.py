"""Time the compiled ``select_sample`` op on the CPU: 32 rows × 4096 fp32 logits, flat to peaked.

    OMP_NUM_THREADS=1 python -m benchmarks.select_sample_cpu     # a markdown table (docs/kernels.md)

Each case: logits N(0, scale²) (generator seed 0, drawn in the order listed), the mask id 3 excluded,
seed 123, offset 7; 5 warm-up calls, then the median of 30. The floor is one read of the logits
(0.5 MB); the op is bound by its per-logit work (softmax terms, Philox noise, two logs where a key can
still win), which is what the cases vary: a flat row lets no token be skipped.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from adjust_kernels import select_sample

ROWS, VOCAB, EXCLUDE, SEED, OFFSET = 32, 4096, 3, 123, 7
CASES = ((0.5, 1.0, "entropy"), (0.5, 0.6, "low_confidence"), (0.5, 0.0, "margin"),
         (3.0, 1.0, "entropy"), (3.0, 0.6, "low_confidence"), (3.0, 0.0, "margin"),
         (10.0, 1.0, "entropy"), (10.0, 0.6, "low_confidence"), (10.0, 0.0, "margin"))


def median_ms(logits: torch.Tensor, temperature: float, score: str, calls: int = 30) -> float:
    for _ in range(5):
        select_sample(logits, temperature, score, SEED, OFFSET, EXCLUDE)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        select_sample(logits, temperature, score, SEED, OFFSET, EXCLUDE)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> int:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lines = ["| logits | T | score | median ms | ns per logit |", "| --- | --- | --- | --- | --- |"]
    for scale, temperature, score in CASES:
        logits = torch.randn(ROWS, VOCAB, generator=g) * scale
        ms = median_ms(logits, temperature, score)
        lines.append(f"| N(0, {scale}²) | {temperature} | {score} | {ms:.3f} | {ms * 1e6 / (ROWS * VOCAB):.1f} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
