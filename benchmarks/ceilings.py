"""The two ceilings of the floors, measured on this machine in the benchmark run itself.

- bandwidth: a large tensor copy (``dst.copy_(src)``; bytes moved = 2 × size), median of several;
- matmul rate: a large square GEMM in the benchmarks' dtype (2·n³ FLOPs), median of several.

CPU: fp32, 128 MiB copy, n = 1024 (on a loaded machine these are what the benchmarks can get too);
GPU: bf16, 1 GiB copy, n = 8192, timed with CUDA events.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Ceilings:
    bandwidth: float  # bytes/s, median
    flop_rate: float  # FLOP/s, median
    dtype: str
    copy_bytes: int  # size of one of the two copied tensors
    matmul_n: int
    bandwidth_samples: tuple[float, ...]
    flop_rate_samples: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _times(fn: Callable[[], object], device: torch.device, reps: int, warmup: int) -> list[float]:
    """Seconds per call, ``reps`` samples after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def _copy(numel: int, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    src = torch.ones(numel, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _matmul(n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    return lambda: torch.mm(a, b, out=c)


@torch.no_grad()
def measure(device: torch.device, dtype: torch.dtype, reps: int = 9, warmup: int = 2) -> Ceilings:
    """Measure both ceilings on ``device`` (see the module docstring for sizes)."""
    gpu = device.type == "cuda"
    copy_bytes = (1 << 30) if gpu else (128 << 20)
    n = 8192 if gpu else 1024
    elt = torch.empty((), dtype=dtype).element_size()
    bw = [2 * copy_bytes / t for t in _times(_copy(copy_bytes // elt, dtype, device), device, reps, warmup)]
    rate = [2.0 * n**3 / t for t in _times(_matmul(n, dtype, device), device, reps, warmup)]
    return Ceilings(statistics.median(bw), statistics.median(rate), str(dtype).removeprefix("torch."),
                    copy_bytes, n, tuple(bw), tuple(rate))
