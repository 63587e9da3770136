"""Shared helpers of the Triton ops: where a kernel may run, dtype rules, the test tolerance rule,
and the counter-based random numbers (Philox) that every sampling op and its reference share.

Triton kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1``, set before triton is imported). The interpreter computes ``tl.dot`` on
bfloat16 inputs wrongly, so the ops upcast bfloat16 operands to fp32 before ``tl.dot`` there
(``dot_upcast``); on a GPU they stay bfloat16 for the tensor cores.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Philox4x32 constants (Salmon et al. 2011), as in triton.language.random.philox_impl.
_PHILOX_KEY_A, _PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
_PHILOX_ROUND_A, _PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
_M32 = 0xFFFFFFFF
PHILOX_ROUNDS = 10

# The largest Gumbel noise our uniform can give: u <= 1 - 2^-24, so G <= -log(-log(1 - 2^-24)) ~ 16.6.
# A vocabulary tile whose best logit plus this bound cannot beat the running best key skips drawing its
# noise; the result is the same as drawing it (select_sample's C++ op uses the same bound).
GUMBEL_MAX = 17.0


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_runnable(op: str, *tensors: Tensor) -> None:
    """Raise unless the tensors share a device a Triton kernel can run on (CUDA, or CPU when interpreting)."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type == "cpu" and not interpreting():
        raise RuntimeError(
            f"{op}: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter); "
            f"use {op}_reference on CPU"
        )
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"{op}: unsupported device {device}")


def check_float(op: str, name: str, t: Tensor, dtype: torch.dtype | None = None) -> None:
    """Raise unless ``t`` is a floating tensor of a supported dtype (and of ``dtype`` when given)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {dtype} (like the activations), got {t.dtype}")


def dot_upcast(dtype: torch.dtype, interpreting: bool) -> bool:
    """Whether kernels must upcast ``dtype`` operands to fp32 before ``tl.dot`` (bf16 in the interpreter)."""
    return dtype == torch.bfloat16 and interpreting


@functools.cache
def multiprocessor_count(device: torch.device) -> int:
    """The SM count of a CUDA device, queried once per device and process (launch configs take it as a number)."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def rows_view(op: str, name: str, t: Tensor) -> Tensor:
    """``t`` [..., D] as a 2-D [rows, D] view with unit column stride (copies only if it cannot be viewed)."""
    if t.dim() < 1:
        raise ValueError(f"{op}: {name} must have at least one dimension")
    t2 = t.reshape(-1, t.shape[-1]) if t.dim() != 2 else t
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


# ---------------------------------------------------------------------------------------------------
# Philox in PyTorch: the specification of the kernels' random numbers.
# ---------------------------------------------------------------------------------------------------


def _mul_hi_lo(a: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit words of the 64-bit product of the constant ``a`` and uint32 values ``b``
    (held in int64): split ``a`` into 16-bit halves so that no partial product overflows int64."""
    p = (a >> 16) * b  # < 2^48
    q = (a & 0xFFFF) * b  # < 2^48
    s = ((p & 0xFFFF) << 16) + q  # low 48 bits of the product, < 2^49
    return (p >> 16) + (s >> 32), s & _M32


def philox_uint32(seed: int | Tensor, c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor) -> Tensor:
    """First output word of Philox4x32-10 for key ``seed`` (64-bit) and counters ``c0..c3`` (uint32
    values in int64 tensors, broadcast together): bit-equal to ``tl.philox(seed, c0, c1, c2, c3)[0]``."""
    seed = torch.as_tensor(seed, dtype=torch.int64, device=c0.device)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(_PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _PHILOX_KEY_A) & _M32, (k1 + _PHILOX_KEY_B) & _M32
    return c0


def uniform_from_bits(bits: Tensor) -> Tensor:
    """u = (top 23 bits + 0.5) * 2^-23 in fp32: exact, strictly inside (0, 1), so Gumbel noise is finite."""
    return ((bits >> 9).float() + 0.5) * 2.0**-23


def gumbel_noise(seed_offset: Tensor, n: int, v: int, device: torch.device, tokens: Tensor | None = None) -> Tensor:
    """Gumbel(0, 1) noise [n, v] of stream (seed, offset) = ``seed_offset``: element (row, j) uses
    Philox counters (token, row, offset low, offset high) and key ``seed``, as the kernels do, where
    token = j, or ``tokens[row, j]`` when the int64 ``tokens`` [n, v] are given (a per-row vocabulary)."""
    seed, offset = seed_offset.to(device=device, dtype=torch.int64).unbind()
    tok = torch.arange(v, device=device, dtype=torch.int64)[None, :] if tokens is None else tokens.to(device)
    row = torch.arange(n, device=device, dtype=torch.int64)[:, None]
    u = uniform_from_bits(philox_uint32(seed, tok, row, offset & _M32, (offset >> 32) & _M32))
    return -torch.log(-torch.log(u))


def check_seed_offset(op: str, seed_offset: Tensor, device: torch.device) -> None:
    """Raise unless ``seed_offset`` is an int64 tensor [2] = (seed, offset) on ``device``."""
    if not isinstance(seed_offset, Tensor) or seed_offset.dtype != torch.int64 or seed_offset.shape != (2,):
        got = f"{seed_offset.dtype} {tuple(seed_offset.shape)}" if isinstance(seed_offset, Tensor) else type(seed_offset).__name__
        raise TypeError(f"{op}: seed_offset must be an int64 tensor of shape [2] = (seed, offset), got {got}")
    if seed_offset.device != device:
        raise ValueError(f"{op}: seed_offset must be on {device} (read by the kernel), got {seed_offset.device}")


# ---------------------------------------------------------------------------------------------------
# The tolerance rule of the tests (cut-cross-entropy's): a fast kernel may err against the float64
# truth by no more than PyTorch does in the same dtype, plus a small slack.
# ---------------------------------------------------------------------------------------------------


def assert_no_worse(fast: Tensor, same_dtype: Tensor, truth: Tensor, slack: float, what: str) -> None:
    """Assert max|fast − truth| ≤ max|same_dtype − truth| + slack, printing the worst entries if not."""
    truth = truth.double()
    err_fast = (fast.double() - truth).abs()
    err_torch = (same_dtype.double() - truth).abs()
    bound = err_torch.max().item() + slack if err_torch.numel() else slack
    worst = err_fast.max().item() if err_fast.numel() else 0.0
    if not worst <= bound:  # also fails on NaN
        flat = err_fast.flatten()
        top = flat.topk(min(5, flat.numel())).indices
        rows = [
            f"  at flat index {int(i)}: fast {fast.flatten()[i].item():.6g}, truth {truth.flatten()[i].item():.6g}, "
            f"torch {same_dtype.flatten()[i].item():.6g}"
            for i in top
        ]
        raise AssertionError(f"{what}: max error {worst:.3g} > torch's {bound - slack:.3g} + slack {slack:.1g}\n" + "\n".join(rows))
