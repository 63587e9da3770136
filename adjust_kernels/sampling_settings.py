"""The sampling settings of a generation and the token distribution they define, in pure PyTorch.

``filter_logits`` is Dream's ``sample_tokens`` filter: logits / temperature (T = 0 means greedy), then
top-p, then top-k, in fp32, the mask token removed. It is the one definition shared by the torch
engine (``adjust.unmasking``, which re-exports both names) and the kernels' references
(``lm_head_sample_reference``), so the engine and the kernels sample from the same distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["SamplingSettings", "filter_logits"]


@dataclass(frozen=True)
class SamplingSettings:
    """Token-sampling and position-selection settings of one generation."""

    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    alg: str = "entropy"
    alg_temp: float | None = None
    sample_mask: bool = False  # True: the mask token stays in the sampling and scores (Dream/LLaDA's own generate)


def filter_logits(logits: torch.Tensor, s: SamplingSettings, mask_token_id: int | None) -> torch.Tensor:
    """fp32 logits of the sampling distribution: /T, top-p, top-k (Dream's order); mask id removed."""
    z = logits.float()
    if mask_token_id is not None:
        z = z.clone()
        z[..., mask_token_id] = float("-inf")
    if s.temperature > 0:
        z = z / s.temperature
    if s.top_p is not None and s.top_p < 1:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        cum = torch.cumsum(F.softmax(sorted_z, dim=-1), dim=-1)
        drop = cum > s.top_p
        # Shift right: keep the token that crosses the threshold (Dream's top_p_logits).
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        z = z.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    if s.top_k is not None:
        k = min(s.top_k, z.shape[-1])
        kth = torch.topk(z, k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    return z
