"""swiglu: ``silu(gate) * up`` fused, the elementwise middle of the SwiGLU MLP.

The two projections before it and the one after stay cuBLAS GEMMs (``torch.nn.functional.linear``);
this kernel saves writing ``silu(gate)`` and reading it back. Rounding follows PyTorch:
``silu`` in fp32 rounded to the dtype, then the product rounded (a product of two fp16/bf16 values is
exact in fp32, so this single rounding equals PyTorch's).

Memory floor: reads gate and up once, writes the result once: 3·rows·I·sizeof bytes.
``gate`` and ``up`` may be strided row views (e.g. the two halves of one fused gate‖up GEMM output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from adjust_kernels._triton_utils import check_float, check_runnable, rows_view

__all__ = ["swiglu", "swiglu_reference"]


@triton.jit
def _swiglu_kernel(
    g_ptr, u_ptr, y_ptr, M, N, stride_g, stride_u, stride_y,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    dt = y_ptr.dtype.element_ty
    g = tl.load(g_ptr + rows[:, None] * stride_g + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + rows[:, None] * stride_u + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    s = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], (s * u).to(dt), mask=mask)


def _check(gate: Tensor, up: Tensor) -> None:
    check_float("swiglu", "gate", gate)
    check_float("swiglu", "up", up, gate.dtype)
    if gate.shape != up.shape or gate.dim() < 1:
        raise ValueError(f"swiglu: gate and up must have one shape, got {tuple(gate.shape)} and {tuple(up.shape)}")


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """``silu(gate) * up`` elementwise.

    Args:
        gate, up: ``[..., I]`` tensors of one shape and float dtype (last dimension unit-strided
            views are read in place).

    Returns:
        A new contiguous tensor of gate's shape and dtype.
    """
    _check(gate, up)
    check_runnable("swiglu", gate, up)
    g2, u2 = rows_view("swiglu", "gate", gate), rows_view("swiglu", "up", up)
    M, N = g2.shape
    y = torch.empty((M, N), dtype=gate.dtype, device=gate.device)
    if y.numel():
        block_n = min(1024, triton.next_power_of_2(N))
        block_m = max(1, min(16, 4096 // block_n))
        grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
        _swiglu_kernel[grid](g2, u2, y, M, N, g2.stride(0), u2.stride(0), y.stride(0), BLOCK_M=block_m, BLOCK_N=block_n)
    return y.view(gate.shape)


def swiglu_reference(gate: Tensor, up: Tensor) -> Tensor:
    """Pure-PyTorch twin of :func:`swiglu` (the expression of ``adjust.models.layers.SwiGLU``)."""
    _check(gate, up)
    return F.silu(gate) * up
