"""Candidate-restricted ADJUST: sampler passes score and sample over a kept set of token ids.

`generate(..., sampler=g, candidate_tokens=k')`. Pass 0 of each base step is the
usual full-vocabulary pass; it also keeps, for every candidate position, the ids of
its k' largest base logits (the mask token excluded). Sampler passes k ≥ 1 then
compute logits only for those ids, `h · W[ids]ᵀ (+ b[ids])`, so each pass reads
N·k'·d of the LM head instead of V·d (the 1.09 GB of Dream's W is what bounds exact
ADJUST's throughput; docs/performance.md).

This is an approximation of ADJUST, not ADJUST: at k ≥ 1 the sampler's distribution
is truncated to the kept set and renormalised (a per-position top-k' filter chosen
by the *base* logits), and the position score (entropy, confidence, …) is computed on
the truncated distribution. Its fidelity is measured by
`adjust eval ... --candidate-tokens K'` (docs/results.md). With k' ≥ V it *is*
ADJUST: the kept ids are kept in ascending order, so the same seed gives the same
tokens.
"""

from __future__ import annotations

import torch

from adjust.backends import check_finite
from adjust.models.adapter import DiffusionLMAdapter
from adjust.unmasking import SamplingSettings, sample_tokens
from adjust_kernels.kept_ids import keep_top_ids, kept_linear


def restricted_logits(
    adapter: DiffusionLMAdapter, h_rows: torch.Tensor, ids: torch.Tensor, mask_token_id: int | None
) -> torch.Tensor:
    """Logits [N, k] of the LM head at the kept ids only (the mask id, if kept, at -inf)."""
    z = kept_linear(h_rows, adapter.lm_head_weight, adapter.lm_head_bias, ids)
    if mask_token_id is not None:  # k ≥ V keeps the mask id: it is still never sampled
        z = z.masked_fill(ids == mask_token_id, float("-inf"))
    return z


class CandidateRestriction:
    """The per-pass sampling of candidate-restricted ADJUST on the torch backend (the triton backend
    runs the same inside `adjust_kernels.AdjustLoop`, ``candidate_tokens``)."""

    def __init__(self, adapter: DiffusionLMAdapter, settings: SamplingSettings, generator: torch.Generator,
                 num_tokens: int) -> None:
        self.adapter, self.settings, self.generator, self.k = adapter, settings, generator, num_tokens
        self.kept: torch.Tensor | None = None  # [B, L, k] ids per position of the current base step

    def __call__(self, h: torch.Tensor, cand: torch.Tensor, pass_in_step: int):
        """(tokens, scores, log q) at the `cand` positions [B, L] of hidden states h [B, L, d]."""
        mask_id = self.adapter.mask_token_id
        if pass_in_step == 0:
            logits = self.adapter.logits(h[cand])
            check_finite(logits, "base model")
            ids = keep_top_ids(logits, self.k, mask_id)
            self.kept = torch.zeros((*cand.shape, ids.shape[-1]), dtype=torch.long, device=h.device)
            self.kept[cand] = ids
            return sample_tokens(logits, self.settings, mask_id, self.generator)
        ids = self.kept[cand]
        logits = restricted_logits(self.adapter, h[cand], ids, mask_id)
        check_finite(logits.masked_fill(ids == mask_id, 0.0), "model or sampler")
        picked, scores, logq = sample_tokens(logits, self.settings, None, self.generator)
        return ids.gather(1, picked[:, None]).squeeze(1), scores, logq
