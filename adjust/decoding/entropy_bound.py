"""EB-sampler: entropy-bounded unmasking (Ben-Hamu et al. 2025, arXiv 2505.24857).

Per base forward, the candidates are sorted by the error proxy (here the position score
``alg``, best first: with the default ``alg="entropy"``, lowest entropy first, the paper's
main choice) and the longest prefix U of that order is committed whose entropies satisfy

    Σ_{i∈U} H(p_i) − max_{i∈U} H(p_i) ≤ γ,

the paper's bound on the KL between committing U jointly from the product of marginals and
the sequential (exact) order. The largest entropy of the set is *not* counted, so the first
token is always free (at least one per forward, no special case needed) and the token that
crosses the budget is the one left out. As in the public implementations of the rule
(``cumsum(H_sorted) − cummax(H_sorted) ≤ γ``, clamped to at least one).

H is the entropy of the distribution the token is drawn from (after /T, top-p, top-k, the
mask id removed): the package's ``entropy`` score negated, as in Dream's ``sample_tokens``
(the published code runs at T = 0, where that is the untempered model distribution; at T > 0
the tempered distribution is the one whose joint error the bound is about). γ = 0 commits
one token per forward wherever entropies are positive: exact K = 1 decoding with this order.
"""

from __future__ import annotations

import torch

from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState, in_score_order, unsort
from adjust.decoding.threshold import check_unit
from adjust.unmasking import SamplingSettings


def entropy_prefix(H_sorted: torch.Tensor, alive_sorted: torch.Tensor, gamma: float, free_first: bool) -> torch.Tensor:
    """The longest prefix (in the given order) of the alive entries with Σ H − max H ≤ γ
    (``free_first``: the EB rule) or Σ H ≤ γ (every token counts); a [B, L] bool mask in that order."""
    H = H_sorted.masked_fill(~alive_sorted, 0.0).double()
    spent = H.cumsum(-1) - H.cummax(-1).values if free_first else H.cumsum(-1)
    return alive_sorted & (spent <= gamma)


class EntropyBound(DecodingPolicy):
    """Commit, in score order, the longest prefix with Σ entropy − max entropy ≤ ``gamma``."""

    name = "entropy_bound"

    def __init__(self, gamma: float) -> None:
        check_unit("EntropyBound", "gamma", gamma)
        self.gamma = float(gamma)

    def check(self, settings: SamplingSettings, sampler, backend: str, block_length: int | None) -> None:
        super().check(settings, sampler, backend, block_length)
        if settings.alg_temp:
            raise ValueError("decoding=entropy_bound: commits a prefix of the score order: alg_temp is not used")

    def commit(self, view: PassView, step: StepState) -> Decision:
        order, alive, H = in_score_order(view, view.entropy())
        return Decision.of(view, unsort(order, entropy_prefix(H, alive, self.gamma, free_first=True)))

    def __repr__(self) -> str:
        return f"EntropyBound(gamma={self.gamma})"
