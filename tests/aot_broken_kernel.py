"""A kernel with a bug that the Triton interpreter does not see and a real compile does: a loop-carried
scalar re-assigned to a block (numpy broadcasts it; the compiler requires a loop-carried value to keep its
type). Used by tests/test_aot.py, through the same ``compile_specs`` path as the package's kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adjust_kernels.aot_shapes import AotProblem
from adjust_kernels.launch import CompileSpec, Launch, LaunchConfig, meta_tensor

BLOCK = 64


@triton.jit
def _running_max_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, BROKEN: tl.constexpr):
    best = tl.load(x_ptr)  # a scalar
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n, other=float("-inf"))
        if BROKEN:
            best = tl.maximum(best, x)  # the bug: now a [BLOCK] block
        else:
            best = tl.maximum(best, tl.max(x, axis=0))
    if BROKEN:
        best = tl.max(best, axis=0)
    tl.store(out_ptr, best)


def _launch(x: torch.Tensor, out: torch.Tensor, broken: bool) -> Launch:
    return Launch(_running_max_kernel, LaunchConfig(grid=(1,), constexprs={"BLOCK": BLOCK, "BROKEN": broken}),
                  (x, out, x.numel()))


def running_max(x: torch.Tensor, broken: bool) -> torch.Tensor:
    """max(x) of a 1-D fp32 tensor, by the kernel."""
    out = torch.empty(1, dtype=torch.float32, device=x.device)
    _launch(x, out, broken)()
    return out[0]


def compile_specs(problem: AotProblem, sm_count: int) -> list[CompileSpec]:
    del sm_count
    x, out = meta_tensor((1000,), torch.float32), meta_tensor((1,), torch.float32)
    return [CompileSpec(problem, "broken" if broken else "fixed", _launch(x, out, broken)) for broken in (True, False)]
