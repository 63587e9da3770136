"""rope (Triton) against its PyTorch twin (adjust_kernels.rotary.apply_rope) and a float64 truth;
runs under TRITON_INTERPRET=1 on CPU.

Fresh random inputs each run; the seed is printed (ADJUST_TEST_SEED=<seed> replays it).
"""

from __future__ import annotations


import pytest
import torch

from adjust.models.layers import position_ids_from_mask, rope_cos_sin
from kernel_common import DEVICE, KERNEL_TEST, REL_SLACK
from adjust_kernels._triton_utils import assert_no_worse
from adjust_kernels.rope import rope, rope_reference

pytestmark = KERNEL_TEST



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,L,H,KV,D", [(2, 13, 3, 1, 12), (3, 9, 4, 2, 16)])
def test_matches_truth_on_projection_views(B: int, L: int, H: int, KV: int, D: int, dtype: torch.dtype) -> None:
    # q/k as the model makes them: [B, L, H*D] projections viewed as [B, H, L, D] (non-contiguous).
    q = torch.randn(B, L, H * D).to(dtype=dtype, device=DEVICE).view(B, L, H, D).transpose(1, 2)
    k = torch.randn(B, L, KV * D).to(dtype=dtype, device=DEVICE).view(B, L, KV, D).transpose(1, 2)
    attn = torch.ones(B, L, dtype=torch.long, device=DEVICE)
    attn[0, :3] = 0  # left padding: positions restart after it
    pos = position_ids_from_mask(attn) + 500  # large angles
    cos, sin = rope_cos_sin(pos, D, 10000.0, dtype)
    q_out, k_out = rope(q, k, cos, sin)
    q_same, k_same = rope_reference(q, k, cos, sin)
    c64, s64 = cos.double()[:, None], sin.double()[:, None]
    for name, x, out, same in (("q", q, q_out, q_same), ("k", k, k_out, k_same)):
        assert out.shape == x.shape and out.is_contiguous() and out.dtype == dtype
        x64 = x.double()
        truth = x64 * c64 + torch.cat([-x64[..., D // 2 :], x64[..., : D // 2]], -1) * s64
        assert_no_worse(out, same, truth, REL_SLACK[dtype] * truth.abs().max().item(), f"rope {name} {dtype}")


def test_rejects_bad_arguments() -> None:
    q, k = torch.randn(1, 2, 5, 8, device=DEVICE), torch.randn(1, 1, 5, 8, device=DEVICE)
    cos, sin = rope_cos_sin(torch.arange(5, device=DEVICE)[None], 8, 10000.0, torch.float32)
    with pytest.raises(ValueError, match="k must be"):
        rope(q, torch.randn(1, 1, 4, 8, device=DEVICE), cos, sin)
    with pytest.raises(ValueError, match="cos and sin"):
        rope(q, k, cos[:, :4], sin[:, :4])
    with pytest.raises(ValueError, match="even"):
        rope(q[..., :7], k[..., :7], cos[..., :7], sin[..., :7])
    with pytest.raises(TypeError, match="dtype"):
        rope(q, k.half(), cos, sin)
