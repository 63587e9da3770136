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
from adjust_kernels.aot_shapes import AotProblem
from adjust_kernels.launch import CompileSpec, Launch, LaunchConfig, meta_tensor

__all__ = ["compile_specs", "swiglu", "swiglu_config", "swiglu_reference"]


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
    s = tl.div_rn(g, 1.0 + tl.exp(-g)).to(dt).to(tl.float32)
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], (s * u).to(dt), mask=mask)


def _check(gate: Tensor, up: Tensor) -> None:
    check_float("swiglu", "gate", gate)
    check_float("swiglu", "up", up, gate.dtype)
    if gate.shape != up.shape or gate.dim() < 1:
        raise ValueError(f"swiglu: gate and up must have one shape, got {tuple(gate.shape)} and {tuple(up.shape)}")


def swiglu_config(rows: int, width: int) -> LaunchConfig:
    """The launch over a [rows, width] problem: [BLOCK_M, BLOCK_N] tiles of at most 4096 elements.
    No FMA contraction: every rounding is the one written."""
    block_n = min(1024, triton.next_power_of_2(width))
    block_m = max(1, min(16, 4096 // block_n))
    return LaunchConfig(grid=(triton.cdiv(rows, block_m), triton.cdiv(width, block_n)),
                        constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n}, fp_fusion=False)


def _launch(g2: Tensor, u2: Tensor, y: Tensor) -> Launch:
    M, N = g2.shape
    return Launch(_swiglu_kernel, swiglu_config(M, N), (g2, u2, y, M, N, g2.stride(0), u2.stride(0), y.stride(0)))


def compile_specs(problem: AotProblem, sm_count: int) -> list[CompileSpec]:
    """The MLP's ``silu(gate) * up`` over the sampler layer's rows at ``problem``."""
    del sm_count  # one program per tile whatever the GPU
    shape = (problem.rows, problem.model.intermediate_size)
    g, u, y = (meta_tensor(shape, problem.dtype) for _ in range(3))
    return [CompileSpec(problem, "", _launch(g, u, y))]


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
    y = torch.empty(g2.shape, dtype=gate.dtype, device=gate.device)
    if y.numel():
        _launch(g2, u2, y)()
    return y.view(gate.shape)


def swiglu_reference(gate: Tensor, up: Tensor) -> Tensor:
    """Pure-PyTorch twin of :func:`swiglu` (the expression of ``adjust.models.layers.SwiGLU``)."""
    _check(gate, up)
    return F.silu(gate) * up
