"""rmsnorm (Triton) against its PyTorch twin and a float64 truth; runs under TRITON_INTERPRET=1 on CPU.

Fresh random inputs each run; the seed is printed (ADJUST_TEST_SEED=<seed> replays it).
"""

from __future__ import annotations


import pytest
import torch

from adjust.models.layers import RMSNorm
from kernel_common import DEVICE, KERNEL_TEST, REL_SLACK
from adjust_kernels._triton_utils import assert_no_worse
from adjust_kernels.rmsnorm import rmsnorm, rmsnorm_reference

pytestmark = KERNEL_TEST



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(3, 7, 37), (2, 5, 96)])
def test_matches_truth_and_module(shape: tuple[int, ...], with_residual: bool, dtype: torch.dtype) -> None:
    D = shape[-1]
    # A column slice of a wider tensor: rows are strided, not contiguous.
    x = (torch.randn(*shape[:-1], D + 5) * 2).to(dtype=dtype, device=DEVICE)[..., :D]
    w = (torch.rand(D) + 0.5).to(dtype=dtype, device=DEVICE)
    r = torch.randn(shape).to(dtype=dtype, device=DEVICE) if with_residual else None
    eps = 1e-6
    y = rmsnorm(x, w, eps, r)
    assert y.shape == x.shape and y.dtype == dtype
    x64 = x.double()
    truth = w.double() * x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    if r is not None:
        truth = truth + r.double()
    module = RMSNorm(D, eps).to(device=DEVICE, dtype=dtype)
    with torch.no_grad():
        module.weight.copy_(w)
        same = module(x) if r is None else r + module(x)
    ref = rmsnorm_reference(x, w, eps, r)
    assert torch.equal(ref, same)  # the twin is the module's math
    assert_no_worse(y, same, truth, REL_SLACK[dtype] * truth.abs().max().item(), f"rmsnorm {dtype}")


def test_rejects_bad_arguments() -> None:
    x = torch.randn(4, 8, device=DEVICE)
    with pytest.raises(ValueError, match="weight must be"):
        rmsnorm(x, torch.ones(7, device=DEVICE), 1e-6)
    with pytest.raises(TypeError, match="dtype"):
        rmsnorm(x, torch.ones(8, device=DEVICE, dtype=torch.float16), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        rmsnorm(x, torch.ones(8, device=DEVICE), 1e-6, torch.randn(4, 7, device=DEVICE))
    with pytest.raises(ValueError, match="eps"):
        rmsnorm(x, torch.ones(8, device=DEVICE), 0.0)
