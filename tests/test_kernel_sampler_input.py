"""sampler_input (Triton) against the sampler's own expression and a float64 truth; runs under
TRITON_INTERPRET=1 on CPU (bfloat16 GEMM operands are upcast there: the interpreter's bf16 tl.dot is wrong).

Fresh random inputs each run; the seed is printed (ADJUST_TEST_SEED=<seed> replays it).
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

from adjust.models.adapter import BaseModelInfo
from adjust.models.layers import LayerConfig
from adjust.sampler import AdjustSampler
from kernel_common import DEVICE, KERNEL_TEST, REL_SLACK
from adjust_kernels._triton_utils import assert_no_worse
from adjust_kernels.sampler_input import sampler_input, sampler_input_reference

pytestmark = KERNEL_TEST



def _sampler(d: int, vocab: int, dtype: torch.dtype) -> tuple[AdjustSampler, nn.Embedding]:
    cfg = LayerConfig(hidden_size=d, num_heads=2, num_kv_heads=1, head_dim=d // 2, intermediate_size=2 * d)
    g = AdjustSampler(cfg, BaseModelInfo("test", vocab, d, None))
    with torch.no_grad():
        g.norm_e.weight.uniform_(0.5, 1.5)
        g.norm_h.weight.uniform_(0.5, 1.5)
        g.down_proj.weight.normal_(0, d**-0.5)
    return g.to(device=DEVICE, dtype=dtype), nn.Embedding(vocab, d).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,L,d,V", [(3, 7, 40, 53), (2, 11, 24, 301)])
def test_matches_sampler_expression(B: int, L: int, d: int, V: int, dtype: torch.dtype) -> None:
    g, emb = _sampler(d, V, dtype)
    x = torch.randint(0, V, (B, L), device=DEVICE)
    h = (torch.randn(B, L, d) * 3).to(dtype=dtype, device=DEVICE)
    eps = g.layer_config.rms_norm_eps
    args = (x, h, emb.weight, g.norm_e.weight, g.norm_h.weight, g.down_proj.weight, eps)
    u = sampler_input(*args)
    assert u.shape == h.shape and u.dtype == dtype
    with torch.no_grad():
        same = g.down_proj(torch.cat([g.norm_e(emb(x)), g.norm_h(h)], -1))
    assert torch.equal(sampler_input_reference(*args), same)

    def rms64(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        v = v.double()
        return w.double() * v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)

    truth = torch.cat([rms64(emb.weight[x], g.norm_e.weight), rms64(h, g.norm_h.weight)], -1) @ g.down_proj.weight.double().T
    assert_no_worse(u, same, truth, REL_SLACK[dtype] * truth.abs().max().item(), f"sampler_input {dtype}")


def test_rejects_bad_arguments() -> None:
    g, emb = _sampler(16, 10, torch.float32)
    x, h = torch.zeros(2, 3, dtype=torch.long, device=DEVICE), torch.randn(2, 3, 16, device=DEVICE)
    w = (emb.weight, g.norm_e.weight, g.norm_h.weight, g.down_proj.weight, 1e-6)
    with pytest.raises(ValueError, match="x must be"):
        sampler_input(x[:, :2], h, *w)
    with pytest.raises(TypeError, match="integer"):
        sampler_input(x.float(), h, *w)
    with pytest.raises(ValueError, match="down_weight"):
        sampler_input(x, h, emb.weight, g.norm_e.weight, g.norm_h.weight, g.down_proj.weight[:, :16], 1e-6)
    with pytest.raises(TypeError, match="dtype"):
        sampler_input(x, h.half(), *w)
