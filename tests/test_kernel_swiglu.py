"""swiglu (Triton) against its PyTorch twin and a float64 truth; runs under TRITON_INTERPRET=1 on CPU.

Fresh random inputs each run; the seed is printed (ADJUST_TEST_SEED=<seed> replays it).
"""

from __future__ import annotations


import pytest
import torch

from kernel_common import DEVICE, KERNEL_TEST, REL_SLACK
from adjust_kernels._triton_utils import assert_no_worse
from adjust_kernels.swiglu import swiglu, swiglu_reference

pytestmark = KERNEL_TEST



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 43), (7, 1100)])
def test_matches_truth(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    # gate and up as the two halves of one fused projection output: strided row views.
    both = (torch.randn(*shape[:-1], 2 * shape[-1]) * 4).to(dtype=dtype, device=DEVICE)
    gate, up = both.split(shape[-1], dim=-1)
    y = swiglu(gate, up)
    assert y.shape == gate.shape and y.dtype == dtype
    g64, u64 = gate.double(), up.double()
    truth = g64 * torch.sigmoid(g64) * u64
    same = swiglu_reference(gate, up)
    assert_no_worse(y, same, truth, REL_SLACK[dtype] * truth.abs().max().item(), f"swiglu {dtype}")


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="one shape"):
        swiglu(torch.randn(3, 4, device=DEVICE), torch.randn(3, 5, device=DEVICE))
    with pytest.raises(TypeError, match="dtype"):
        swiglu(torch.randn(3, 4, device=DEVICE), torch.randn(3, 4, device=DEVICE, dtype=torch.float16))
    with pytest.raises(TypeError, match="float32"):
        swiglu(torch.ones(3, 4, device=DEVICE, dtype=torch.long), torch.ones(3, 4, device=DEVICE, dtype=torch.long))
