"""sampler_input: the ADJUST sampler's input projection in one kernel,

    u = DownProj( concat( Norm_e(E[x]), Norm_h(h) ) )
      = Norm_e(E[x]) @ Wd[:, :d]ᵀ + Norm_h(h) @ Wd[:, d:]ᵀ,

i.e. ``sampler.down_proj(torch.cat([sampler.norm_e(E(x)), sampler.norm_h(h)], -1))``: the embedding
gather, both RMSNorms and the down-projection as a split-K GEMM whose A operand is built on the fly
from the embedding rows and h, so neither the gathered embeddings, the normalised rows nor the
concatenated ``[.., 2d]`` tensor ever exist in memory.

Each program owns a ``BLOCK_M × BLOCK_N`` tile of u: it first sweeps its rows once for the two mean
squares, then runs the GEMM over the 2d reduction (the E half, then the h half), normalising each
A chunk as it is loaded. Rounding follows PyTorch's RMSNorm (normalised row rounded to the
activation dtype, then the weight product rounded) so the GEMM sees the same A operand as
``nn.Linear`` would; accumulation is fp32, and fp32 inputs use IEEE fp32 products (not TF32), as
PyTorch's default matmul does.

Floor per call, M = B·L rows: bytes = (M·d [E rows] + M·d [h] + 2d·d [Wd] + M·d [u])·sizeof,
FLOPs = 2·M·2d·d. Token ids must lie in [0, V): they are not checked (a check would sync the host).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from adjust_kernels._triton_utils import check_float, check_runnable, dot_upcast, interpreting
from adjust_kernels.aot_shapes import AotProblem
from adjust_kernels.launch import CompileSpec, Launch, LaunchConfig, meta_tensor
from adjust_kernels.rmsnorm import rmsnorm_reference

__all__ = ["compile_specs", "sampler_input", "sampler_input_config", "sampler_input_reference"]


@triton.jit
def _normalised_chunk(ptrs, mask, rstd, w_ptr, ks, D, dt: tl.constexpr, UPCAST: tl.constexpr):
    """One [BLOCK_M, BLOCK_K] chunk of RMSNorm(rows) in the activation dtype (fp32 if UPCAST)."""
    x = tl.load(ptrs, mask=mask, other=0.0).to(dt).to(tl.float32)
    w = tl.load(w_ptr + ks, mask=ks < D, other=0.0).to(tl.float32)
    a = ((x * rstd[:, None]).to(dt).to(tl.float32) * w[None, :]).to(dt)
    if UPCAST:
        a = a.to(tl.float32)
    return a


@triton.jit
def _sampler_input_kernel(
    ids_ptr, e_ptr, h_ptr, we_ptr, wh_ptr, wd_ptr, u_ptr,
    M, D, stride_e, stride_h, stride_wd, stride_u, eps,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < D
    dt = u_ptr.dtype.element_ty
    tok = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    e_rows = e_ptr + tok[:, None] * stride_e
    h_rows = h_ptr + rows[:, None].to(tl.int64) * stride_h

    # Sweep 1: the two mean squares (the embedding is first cast to h's dtype, as the sampler does).
    sse = tl.zeros((BLOCK_M,), dtype=tl.float32)
    ssh = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        m = row_ok[:, None] & (ks < D)[None, :]
        e = tl.load(e_rows + ks[None, :], mask=m, other=0.0).to(dt).to(tl.float32)
        h = tl.load(h_rows + ks[None, :], mask=m, other=0.0).to(tl.float32)
        sse += tl.sum(e * e, axis=1)
        ssh += tl.sum(h * h, axis=1)
    # Exactly rounded / and sqrt, as in rmsnorm.
    rstd_e = tl.div_rn(1.0, tl.sqrt_rn(tl.div_rn(sse, D * 1.0) + eps))
    rstd_h = tl.div_rn(1.0, tl.sqrt_rn(tl.div_rn(ssh, D * 1.0) + eps))

    # Sweep 2: the split GEMM, columns [0, d) of Wd against Norm_e(E[x]), [d, 2d) against Norm_h(h).
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    w_cols = wd_ptr + cols[None, :].to(tl.int64) * stride_wd
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        m = row_ok[:, None] & (ks < D)[None, :]
        wm = (ks < D)[:, None] & col_ok[None, :]
        a = _normalised_chunk(e_rows + ks[None, :], m, rstd_e, we_ptr, ks, D, dt, UPCAST)
        w = tl.load(w_cols + ks[:, None], mask=wm, other=0.0)
        if UPCAST:
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision="ieee")
        a = _normalised_chunk(h_rows + ks[None, :], m, rstd_h, wh_ptr, ks, D, dt, UPCAST)
        w = tl.load(w_cols + D + ks[:, None], mask=wm, other=0.0)
        if UPCAST:
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision="ieee")
    out = u_ptr + rows[:, None].to(tl.int64) * stride_u + cols[None, :]
    tl.store(out, acc.to(dt), mask=row_ok[:, None] & col_ok[None, :])


def _check(
    x: Tensor, h: Tensor, embed_weight: Tensor, norm_e_weight: Tensor, norm_h_weight: Tensor,
    down_weight: Tensor, eps: float,
) -> None:
    op = "sampler_input"
    check_float(op, "h", h)
    check_float(op, "embed_weight", embed_weight)
    for name, t in (("norm_e_weight", norm_e_weight), ("norm_h_weight", norm_h_weight), ("down_weight", down_weight)):
        check_float(op, name, t, h.dtype)
    if not isinstance(x, Tensor) or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{op}: x must be an integer tensor of token ids")
    if h.dim() < 2 or x.shape != h.shape[:-1]:
        raise ValueError(f"{op}: x must be h.shape[:-1]; got x {tuple(x.shape)}, h {tuple(h.shape)}")
    d = h.shape[-1]
    if embed_weight.dim() != 2 or embed_weight.shape[1] != d:
        raise ValueError(f"{op}: embed_weight must be [V, {d}], got {tuple(embed_weight.shape)}")
    if norm_e_weight.shape != (d,) or norm_h_weight.shape != (d,):
        raise ValueError(f"{op}: norm weights must be [{d}], got {tuple(norm_e_weight.shape)}, {tuple(norm_h_weight.shape)}")
    if down_weight.shape != (d, 2 * d):
        raise ValueError(f"{op}: down_weight must be [{d}, {2 * d}], got {tuple(down_weight.shape)}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"{op}: eps must be a number > 0, got {eps!r}")


def sampler_input_config(rows: int, d: int, dtype: torch.dtype, *, interpreting: bool) -> LaunchConfig:
    """The launch for ``rows`` rows of width ``d`` in ``dtype``: one [BLOCK_M, BLOCK_N] tile of u per
    program, the reduction in BLOCK_K chunks. fp32 (IEEE products, so FMA instead of tensor cores) takes
    [64, 64] tiles, 16-wide chunks and 8 warps: the 16-bit tiles would ask fp32 for 214 KB of shared
    memory (over sm_80's 163 KB) and spill. No FMA contraction outside the products: the norms round
    where PyTorch's RMSNorm does."""
    wide = dtype != torch.float32
    block_m = min(64, max(16, triton.next_power_of_2(rows)))
    block_n = min(128 if wide else 64, max(16, triton.next_power_of_2(d)))
    block_k = min(64 if wide else 16, max(16, triton.next_power_of_2(d)))
    return LaunchConfig(
        grid=(triton.cdiv(rows, block_m), triton.cdiv(d, block_n)),
        constexprs={"UPCAST": dot_upcast(dtype, interpreting), "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
        num_warps=4 if wide else 8,
        fp_fusion=False,
    )


def _launch(ids: Tensor, e: Tensor, h2: Tensor, we: Tensor, wh: Tensor, wd: Tensor, u: Tensor, eps: float) -> Launch:
    M, d = h2.shape
    return Launch(_sampler_input_kernel, sampler_input_config(M, d, h2.dtype, interpreting=interpreting()),
                  (ids, e, h2, we, wh, wd, u, M, d, e.stride(0), h2.stride(0), wd.stride(0), u.stride(0), float(eps)))


def compile_specs(problem: AotProblem, sm_count: int) -> list[CompileSpec]:
    """The sampler's input projection over its B·L rows at ``problem`` (embedding in the same dtype)."""
    del sm_count  # one program per output tile whatever the GPU
    m, dt, M = problem.model, problem.dtype, problem.rows
    d = m.hidden_size
    args = (meta_tensor((M,), torch.int64), meta_tensor((m.vocab_size, d), dt), meta_tensor((M, d), dt),
            meta_tensor((d,), dt), meta_tensor((d,), dt), meta_tensor((d, 2 * d), dt), meta_tensor((M, d), dt))
    return [CompileSpec(problem, "", _launch(*args, 1e-6))]


def sampler_input(
    x: Tensor, h: Tensor, embed_weight: Tensor, norm_e_weight: Tensor, norm_h_weight: Tensor,
    down_weight: Tensor, eps: float,
) -> Tensor:
    """The sampler's DownProj input ``u`` from token ids and hidden states (module docstring).

    Args:
        x: ``[...]`` integer token ids, each in ``[0, V)``.
        h: ``[..., d]`` hidden states (float32/float16/bfloat16).
        embed_weight: ``[V, d]`` base embedding (any float dtype; cast to h's dtype like the sampler does).
        norm_e_weight, norm_h_weight: ``[d]`` RMSNorm weights, in h's dtype.
        down_weight: ``[d, 2d]`` DownProj weight (``nn.Linear(2d, d).weight``), in h's dtype.
        eps: the RMSNorms' epsilon.

    Returns:
        ``u`` ``[..., d]`` in h's dtype.
    """
    _check(x, h, embed_weight, norm_e_weight, norm_h_weight, down_weight, eps)
    check_runnable("sampler_input", x, h, embed_weight, norm_e_weight, norm_h_weight, down_weight)
    d = h.shape[-1]
    ids = x.reshape(-1).contiguous()
    h2 = h.reshape(-1, d)
    if h2.stride(-1) != 1:
        h2 = h2.contiguous()
    e, wd = embed_weight, down_weight
    if e.stride(-1) != 1:
        e = e.contiguous()
    if wd.stride(-1) != 1:
        wd = wd.contiguous()
    M = h2.shape[0]
    u = torch.empty((M, d), dtype=h.dtype, device=h.device)
    if M:
        _launch(ids, e, h2, norm_e_weight, norm_h_weight, wd, u, eps)()
    return u.view(h.shape)


def sampler_input_reference(
    x: Tensor, h: Tensor, embed_weight: Tensor, norm_e_weight: Tensor, norm_h_weight: Tensor,
    down_weight: Tensor, eps: float,
) -> Tensor:
    """Pure-PyTorch twin of :func:`sampler_input`: the sampler's own expression, concatenation included."""
    _check(x, h, embed_weight, norm_e_weight, norm_h_weight, down_weight, eps)
    e = F.embedding(x, embed_weight).to(h.dtype)
    cat = torch.cat([rmsnorm_reference(e, norm_e_weight, eps), rmsnorm_reference(h, norm_h_weight, eps)], dim=-1)
    return F.linear(cat, down_weight)
