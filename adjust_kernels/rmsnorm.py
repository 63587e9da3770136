"""rmsnorm: y = weight * (x / rms(x)), optionally added to a residual, in one pass over the rows.

Semantics are those of ``adjust.models.layers.RMSNorm`` (Llama/Qwen2): the statistics and the
normalisation are fp32, the normalised row is rounded to x's dtype *before* the weight multiply, and
the product (and the residual sum) are rounded to that dtype again, exactly where PyTorch rounds.
With ``residual`` the op returns ``residual + rmsnorm(x)``: the sampler's last step
``h + Norm_out(layer(u))`` in one kernel instead of two.

Memory floor: reads x (and the residual) once, writes y once: (2 or 3)·rows·D·sizeof + D·sizeof bytes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from adjust_kernels._triton_utils import check_float, check_runnable, rows_view
from adjust_kernels.aot_shapes import AotProblem
from adjust_kernels.launch import CompileSpec, Launch, LaunchConfig, meta_tensor

__all__ = ["compile_specs", "rmsnorm", "rmsnorm_config", "rmsnorm_reference"]


@triton.jit
def _rmsnorm_kernel(
    x_ptr, w_ptr, r_ptr, y_ptr,
    M, D, stride_x, stride_r, stride_y, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < M)[:, None] & (cols < D)[None, :]
    dt = y_ptr.dtype.element_ty
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    # Exactly rounded / and sqrt (a plain / is div.full.f32, approximate); D * 1.0 also when D is the constant 1.
    rstd = tl.div_rn(1.0, tl.sqrt_rn(tl.div_rn(tl.sum(x * x, axis=1), D * 1.0) + eps))
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    # Round where torch rounds: the normalised row to x's dtype, then the weight product.
    y = ((x * rstd[:, None]).to(dt).to(tl.float32) * w[None, :]).to(dt)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        y = (r + y.to(tl.float32)).to(dt)
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y, mask=mask)


def _check(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None) -> None:
    check_float("rmsnorm", "x", x)
    check_float("rmsnorm", "weight", weight, x.dtype)
    if weight.dim() != 1 or x.dim() < 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"rmsnorm: weight must be [D] with D = x.shape[-1], got {tuple(weight.shape)} for x {tuple(x.shape)}")
    if residual is not None:
        check_float("rmsnorm", "residual", residual, x.dtype)
        if residual.shape != x.shape:
            raise ValueError(f"rmsnorm: residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"rmsnorm: eps must be a number > 0, got {eps!r}")


def rmsnorm_config(rows: int, d: int, *, residual: bool) -> LaunchConfig:
    """The launch of ``rows`` rows of width ``d``: whole rows per program, ``BLOCK_M`` rows at a time.
    No FMA contraction: every rounding is the one written (and PyTorch's)."""
    block_d = triton.next_power_of_2(d)
    block_m = max(1, min(16, 4096 // block_d))  # a [BLOCK_M, BLOCK_D] fp32 tile fits in registers
    return LaunchConfig(
        grid=(triton.cdiv(rows, block_m),),
        constexprs={"HAS_RESIDUAL": residual, "BLOCK_M": block_m, "BLOCK_D": block_d},
        fp_fusion=False,
    )


def _launch(x2: Tensor, weight: Tensor, r2: Tensor | None, y: Tensor, eps: float) -> Launch:
    """The kernel call for the rows ``x2`` [M, D] (and ``r2``) into ``y``."""
    M, D = x2.shape
    r = r2 if r2 is not None else x2
    return Launch(_rmsnorm_kernel, rmsnorm_config(M, D, residual=r2 is not None),
                  (x2, weight, r, y, M, D, x2.stride(0), r.stride(0), y.stride(0), float(eps)))


def compile_specs(problem: AotProblem, sm_count: int) -> list[CompileSpec]:
    """What the sampler layer launches at ``problem``: the two norms, and ``h + Norm_out(y)``."""
    del sm_count  # one program per row block whatever the GPU
    shape, dt = (problem.rows, problem.model.hidden_size), problem.dtype
    x, w = meta_tensor(shape, dt), meta_tensor(shape[1:], dt)
    return [CompileSpec(problem, "residual" if res else "plain",
                        _launch(x, w, meta_tensor(shape, dt) if res else None, meta_tensor(shape, dt), 1e-6))
            for res in (False, True)]


def rmsnorm(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None = None) -> Tensor:
    """``weight * x / sqrt(mean(x²) + eps)`` over the last dimension, plus ``residual`` when given.

    Args:
        x: ``[..., D]`` float32/float16/bfloat16 activations (any leading shape).
        weight: ``[D]``, same dtype as x.
        eps: added to the mean square.
        residual: optional tensor of x's shape and dtype added to the result.

    Returns:
        A new tensor of x's shape and dtype.
    """
    _check(x, weight, eps, residual)
    check_runnable("rmsnorm", *(t for t in (x, weight, residual) if t is not None))
    D = x.shape[-1]
    x2 = rows_view("rmsnorm", "x", x)
    r2 = rows_view("rmsnorm", "residual", residual) if residual is not None else None
    y = torch.empty((x2.shape[0], D), dtype=x.dtype, device=x.device)
    if y.numel():
        _launch(x2, weight, r2, y, eps)()
    return y.view(x.shape)


def rmsnorm_reference(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None = None) -> Tensor:
    """Pure-PyTorch twin of :func:`rmsnorm` (the math of ``adjust.models.layers.RMSNorm``)."""
    _check(x, weight, eps, residual)
    xf = x.float()
    y = weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if residual is None else residual + y
