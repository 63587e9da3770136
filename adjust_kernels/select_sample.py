"""select_sample: sample one token per candidate row and score it for unmasking, in one vocabulary pass.

``select_sample`` runs the compiled op ``torch.ops.adjust_kernels.select_sample`` from the extension
module ``adjust_kernels._C`` (built from ``csrc/`` by ``pip install --no-build-isolation -e .``; CPU with
OpenMP always, CUDA when built with nvcc). ``select_sample_reference`` is its pure-PyTorch
specification, with the same signature.

Semantics, per row of ``logits`` (the engine gathers the candidate = masked positions' rows); they are
Dream's ``sample_tokens`` and LLaDA's ``low_confidence`` rule:

- ``z = logits / temperature`` if ``temperature > 0`` else ``logits``, in fp32; ``exclude_token`` (the
  mask id) gets probability 0 in every softmax below, and ``-inf`` logits are allowed (filtered tokens);
- ``temperature == 0``: token = argmax z (lowest index on ties); ``temperature > 0``: token ~ softmax(z);
- score, with p = softmax(z): ``entropy`` = sum p log p (negative entropy, higher = more certain; Dream
  adds 1e-10 inside the log, which changes it by at most V * 1e-10), ``confidence`` = p[token],
  ``margin`` = top1 p - top2 p (0 when the top logit is tied), ``low_confidence`` =
  softmax(untempered logits)[token].

Top-p / top-k are not part of this op: the caller applies them to the logits first (setting the
filtered tokens to -inf or the dtype's min), because top-p needs its own pass over a sorted row.

The compiled op never materialises the softmax: it keeps a running (max, sum e, sum e * z) state and
samples by Gumbel-max, argmax(z + G), with G from Philox4x32-10 of (seed, offset, row, token): the
package-wide noise of ``adjust_kernels._triton_utils.gumbel_noise``, shared with the Triton ops. Its
results depend on (seed, offset) only, not on thread count or tiling. The reference samples with
``torch.multinomial`` from a generator seeded by (seed, offset): same distribution, different stream.
Rows must hold at least one token with a finite logit other than ``exclude_token``; otherwise the op
returns token -1 and a NaN score.
"""

from __future__ import annotations

import importlib
import math
import operator

import torch
from torch import Tensor

try:  # importing the extension registers torch.ops.adjust_kernels.*
    _C = importlib.import_module("adjust_kernels._C")
except ImportError as _err:
    _C = None
    _IMPORT_ERROR: str = f"{type(_err).__name__}: {_err}"
else:
    _IMPORT_ERROR = ""

__all__ = ["SCORES", "is_available", "select_sample", "select_sample_reference"]

SCORES = ("entropy", "confidence", "margin", "low_confidence")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_OP_NAME = "adjust_kernels::select_sample"


def is_available(device: str | torch.device = "cpu") -> bool:
    """Whether the compiled op exists and has a kernel for ``device``'s type (CPU, or CUDA if built with nvcc)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(torch.device(device).type)
    return _C is not None and key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(_OP_NAME, key)


def _as_int64(name: str, value: int) -> int:
    """Any Python int, wrapped to the signed 64-bit value with the same low 64 bits (the op's seed type)."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    return ((value & (2**64 - 1)) ^ 2**63) - 2**63


def _check(
    logits: Tensor, temperature: float, score: str, seed: int, offset: int, exclude_token: int
) -> tuple[float, int, int, int]:
    """Validates the arguments; returns (temperature, seed, offset, exclude_token) normalised for the op."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [N, V], got shape {tuple(logits.shape)}")
    if logits.dtype not in _DTYPES:
        raise TypeError(f"logits must be float32, float16 or bfloat16, got {logits.dtype}")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a float, got {type(temperature).__name__}") from None
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    exclude_token = _as_int64("exclude_token", exclude_token)
    if not -1 <= exclude_token < logits.shape[1]:
        raise ValueError(f"exclude_token must be -1 or in [0, {logits.shape[1]}), got {exclude_token}")
    return temperature, _as_int64("seed", seed), _as_int64("offset", offset), exclude_token


def select_sample(
    logits: Tensor, temperature: float, score: str, seed: int, offset: int, exclude_token: int = -1
) -> tuple[Tensor, Tensor]:
    """Samples (T > 0) or argmaxes (T = 0) one token per row of ``logits`` and scores it (module docstring).

    Args:
        logits: ``[N, V]`` float32/float16/bfloat16 logits of the candidate positions.
        temperature: ``>= 0``; 0 means greedy.
        score: one of ``SCORES``.
        seed, offset: select the random stream; equal arguments give equal results.
        exclude_token: a token id that is never chosen and has probability 0 (the mask id), or -1.

    Returns:
        ``tokens`` int64 ``[N]`` and ``scores`` float32 ``[N]``, on ``logits``' device.
    """
    temperature, seed, offset, exclude_token = _check(logits, temperature, score, seed, offset, exclude_token)
    if not is_available(logits.device):
        if _C is None:
            reason = f"the extension adjust_kernels._C is not built ({_IMPORT_ERROR})"
            hint = "build it with `pip install --no-build-isolation -e .` (ADJUST_SKIP_CPP_BUILD unset)"
        else:
            reason = f"adjust_kernels._C has no {logits.device.type} kernel"
            hint = "rebuild with a CUDA torch and nvcc on PATH or CUDA_HOME (ADJUST_FORCE_CUDA_BUILD=1 checks this)"
        raise RuntimeError(f"select_sample: {reason}; {hint}, or use select_sample_reference")
    return torch.ops.adjust_kernels.select_sample(logits.contiguous(), temperature, score, seed, offset, exclude_token)


def _generator_seed(seed: int, offset: int) -> int:
    """A torch.Generator seed for (seed, offset), mixed so that neighbouring pairs give unrelated streams."""
    mask = 2**64 - 1

    def mix64(z: int) -> int:  # splitmix64's output function
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    return mix64((mix64(seed & mask) + offset) & mask)


def select_sample_reference(
    logits: Tensor, temperature: float, score: str, seed: int, offset: int, exclude_token: int = -1
) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch twin of :func:`select_sample` (same signature and semantics): materialises the fp32
    softmax. Equal to the op at T = 0 (tokens exactly, scores to fp32 rounding); at T > 0 it samples the
    same distribution with ``torch.multinomial`` from a generator seeded by (seed, offset)."""
    temperature, seed, offset, exclude_token = _check(logits, temperature, score, seed, offset, exclude_token)
    x = logits.float()
    if exclude_token >= 0:
        x = x.index_fill(1, torch.tensor([exclude_token], device=x.device), -math.inf)
    z = x / temperature if temperature > 0 else x
    p = torch.softmax(z, dim=-1)
    if temperature > 0 and p.shape[0] > 0:
        gen = torch.Generator(device=logits.device).manual_seed(_generator_seed(seed, offset))
        tokens = torch.multinomial(p, 1, generator=gen).squeeze(1)
    else:
        tokens = z.argmax(dim=-1)
    if score == "entropy":
        scores = -torch.special.entr(p).sum(dim=-1)
    elif score == "margin":
        top = torch.nn.functional.pad(p, (0, 1)).topk(2, dim=-1).values  # the 0 column covers V == 1
        scores = top[:, 0] - top[:, 1]
    else:
        q = torch.softmax(x, dim=-1) if score == "low_confidence" else p
        scores = q.gather(1, tokens[:, None]).squeeze(1)
    return tokens, scores
