"""rope: rotary position embedding of q and k, half-rotation layout (Llama/Qwen2, ``adjust_kernels.rotary``).

``out = x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)`` over the head dim,
and cos/sin the ``[B, L, D]`` tables of ``adjust_kernels.rotary.rope_cos_sin`` (computed from the
positions once per base forward and shared by every sampler pass of that step; a table rather than
in-kernel ``sin``/``cos`` because Triton's fast fp32 trigonometry is inaccurate at large arguments, and
the table costs B·L·D elements, nothing next to q).

The kernel reads q/k through their strides, so the ``[B, L, H·D] -> [B, H, L, D]`` transposed views
that the projections produce are read in place, and it writes contiguous ``[B, H, L, D]`` outputs,
ready for ``scaled_dot_product_attention``: the transpose copy is fused into the rotation.
Rounding follows PyTorch's in the tensors' dtype: each product, then the sum.

Memory floor: q and k read once and written once, plus the two tables:
2·B·L·(H + H_kv)·D·sizeof + 2·B·L·D·sizeof bytes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from adjust_kernels._triton_utils import check_float, check_runnable
from adjust_kernels.aot_shapes import AotProblem
from adjust_kernels.launch import CompileSpec, Launch, LaunchConfig, meta_tensor
from adjust_kernels.rotary import apply_rope

__all__ = ["compile_specs", "rope", "rope_config", "rope_reference"]


@triton.jit
def _rope_kernel(
    x_ptr, cos_ptr, sin_ptr, y_ptr,
    L, HALF, n_lblocks,
    sx_b, sx_h, sx_l, sx_d, sc_b, sc_l, sc_d, ss_b, ss_l, ss_d,
    BLOCK_L: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    b = tl.program_id(0) // n_lblocks
    ls = (tl.program_id(0) % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    head = tl.program_id(1)
    H = tl.num_programs(1)
    i = tl.arange(0, BLOCK_HALF)
    mask = (ls < L)[:, None] & (i < HALF)[None, :]
    dt = y_ptr.dtype.element_ty
    xp = x_ptr + b * sx_b + head * sx_h + ls[:, None] * sx_l
    x1 = tl.load(xp + i[None, :] * sx_d, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(xp + (i[None, :] + HALF) * sx_d, mask=mask, other=0.0).to(tl.float32)
    cp = cos_ptr + b * sc_b + ls[:, None] * sc_l
    sp = sin_ptr + b * ss_b + ls[:, None] * ss_l
    c1 = tl.load(cp + i[None, :] * sc_d, mask=mask, other=0.0).to(tl.float32)
    c2 = tl.load(cp + (i[None, :] + HALF) * sc_d, mask=mask, other=0.0).to(tl.float32)
    s1 = tl.load(sp + i[None, :] * ss_d, mask=mask, other=0.0).to(tl.float32)
    s2 = tl.load(sp + (i[None, :] + HALF) * ss_d, mask=mask, other=0.0).to(tl.float32)
    # Products of two dtype values are exact in fp32: rounding each, then the sum, is PyTorch's rounding.
    y1 = ((x1 * c1).to(dt).to(tl.float32) + (-x2 * s1).to(dt).to(tl.float32)).to(dt)
    y2 = ((x2 * c2).to(dt).to(tl.float32) + (x1 * s2).to(dt).to(tl.float32)).to(dt)
    yp = y_ptr + ((b * H + head) * L + ls[:, None]) * (2 * HALF)
    tl.store(yp + i[None, :], y1, mask=mask)
    tl.store(yp + i[None, :] + HALF, y2, mask=mask)


def _check(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> None:
    check_float("rope", "q", q)
    for name, t in (("k", k), ("cos", cos), ("sin", sin)):
        check_float("rope", name, t, q.dtype)
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"rope: q and k must be [B, H, L, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    B, _, L, D = q.shape
    if k.shape[0] != B or k.shape[2:] != (L, D):
        raise ValueError(f"rope: k must be [B, H_kv, L, D] matching q {tuple(q.shape)}, got {tuple(k.shape)}")
    if D % 2:
        raise ValueError(f"rope: the head dim must be even (half rotation), got {D}")
    if cos.shape != (B, L, D) or sin.shape != (B, L, D):
        raise ValueError(f"rope: cos and sin must be [B, L, D] = {(B, L, D)}, got {tuple(cos.shape)} and {tuple(sin.shape)}")


def rope_config(batch: int, heads: int, seq_len: int, head_dim: int) -> LaunchConfig:
    """The launch over x [B, H, L, D]: one program per (sequence, block of positions) and head, each
    rotating a [BLOCK_L, D] tile of at most 4096 elements. No FMA contraction: each product is rounded
    to the dtype before the sum, as PyTorch does (exact in fp32 for fp16/bf16 inputs anyway)."""
    block_half = triton.next_power_of_2(head_dim // 2)
    block_l = max(1, min(triton.next_power_of_2(seq_len), 2048 // block_half))
    return LaunchConfig(grid=(batch * triton.cdiv(seq_len, block_l), heads),
                        constexprs={"BLOCK_L": block_l, "BLOCK_HALF": block_half}, fp_fusion=False)


def _launch(x: Tensor, cos: Tensor, sin: Tensor, y: Tensor) -> Launch:
    B, H, L, D = x.shape
    cfg = rope_config(B, H, L, D)
    n_lblocks = triton.cdiv(L, cfg.constexprs["BLOCK_L"])
    return Launch(_rope_kernel, cfg, (x, cos, sin, y, L, D // 2, n_lblocks, *x.stride(), *cos.stride(), *sin.stride()))


def compile_specs(problem: AotProblem, sm_count: int) -> list[CompileSpec]:
    """q and k at ``problem``, read through the transposed views of the q / k projection outputs."""
    del sm_count  # one program per tile whatever the GPU
    m, (B, L) = problem.model, (problem.batch, problem.seq_len)
    cos, sin = (meta_tensor((B, L, m.head_dim), problem.dtype) for _ in range(2))
    specs = []
    for what, heads in (("q", m.num_heads), ("k", m.num_kv_heads)):
        x = meta_tensor((B, L, heads * m.head_dim), problem.dtype).view(B, L, heads, m.head_dim).transpose(1, 2)
        y = meta_tensor((B, heads, L, m.head_dim), problem.dtype)
        specs.append(CompileSpec(problem, what, _launch(x, cos, sin, y)))
    return specs


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if y.numel():
        _launch(x, cos, sin, y)()
    return y


def rope(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate q and k by the position tables cos/sin.

    Args:
        q: ``[B, H, L, D]`` queries, any strides (e.g. the transposed view of a projection output).
        k: ``[B, H_kv, L, D]`` keys, any strides.
        cos, sin: ``[B, L, D]`` tables from ``adjust_kernels.rotary.rope_cos_sin``, in q's dtype.

    Returns:
        Rotated ``(q, k)`` as new contiguous ``[B, H, L, D]`` / ``[B, H_kv, L, D]`` tensors.
    """
    _check(q, k, cos, sin)
    check_runnable("rope", q, k, cos, sin)
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def rope_reference(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch twin of :func:`rope`: ``adjust_kernels.rotary.apply_rope`` on q and on k."""
    _check(q, k, cos, sin)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)
