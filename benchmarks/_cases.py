"""Why a backend or variant cannot be timed here (shared by the benchmark files)."""

from __future__ import annotations

from adjust_kernels._triton_utils import interpreting
from adjust_kernels.select_sample import is_available
from benchmarks.shapes import DEVICE, HAS_CUDA


def unavailable(backend: str) -> str | None:
    """Skip reason for a backend/variant on this machine, or None when it can be timed."""
    if backend.startswith("triton") and not HAS_CUDA:
        if interpreting():
            return "triton: TRITON_INTERPRET=1 runs Triton's CPU interpreter, an emulator, not a speed measurement"
        return ("triton: GPU-only (on CPU Triton runs only under TRITON_INTERPRET, an emulator, "
                "not a speed measurement)")
    if backend == "cpp" and not is_available(DEVICE):
        return f"cpp: the compiled select_sample op is not built for {DEVICE.type}"
    return None
