"""ADJUST-adaptive: a confidence threshold or an entropy budget on the sampler-updated distributions.

Fixed-K ADJUST commits one token per pass for K passes. Here, after the base forward (pass 0)
and after every sampler pass, the rule of a training-free adaptive method is applied to the
*current* distributions — those of pass k are conditioned (by the sampler) on every token
committed so far in this base step — so one pass may commit several tokens, and the passes
stop early when nothing qualifies. At most ``max_tokens`` (K_max) tokens per base forward
(and so at most K_max passes, K_max − 1 of them sampler passes).

- ``rule="threshold"`` (value τ, ``alg`` ``confidence`` or ``low_confidence``): pass 0 is
  Fast-dLLM's rule (every candidate with confidence ≥ τ, and at least the most confident);
  a sampler pass commits the candidates with confidence ≥ τ, none forced;
- ``rule="entropy"`` (value γ): pass 0 is the EB-sampler rule (score order, longest prefix with
  Σ H − max H ≤ γ); a sampler pass commits the longest score-order prefix with Σ H ≤ γ — every
  token counts there, none is free, since pass 0 already guaranteed progress.

Within a pass, the commits are the best-scoring qualifying candidates, cut to the row's budget
left (K_max − committed). A row whose sampler pass commits nothing is done for this base step;
the passes stop when no row is left. ``max_tokens=1`` is exact K = 1 decoding (with the
rule's position order). The static-shape twin of this loop (a commit mask per pass, no host
branching, CUDA-graph capturable) is `adjust_kernels.adaptive_loop.AdaptiveAdjustLoop`.
"""

from __future__ import annotations

import torch

from adjust.decoding.entropy_bound import entropy_prefix
from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState, in_score_order, unsort
from adjust.decoding.threshold import check_probability_score, check_unit
from adjust.unmasking import SamplingSettings

RULES = ("threshold", "entropy")


class AdaptiveAdjust(DecodingPolicy):
    """ADJUST with an adaptive commit rule per pass (see the module docstring).

    Args:
        rule: ``"threshold"`` (``value`` = τ) or ``"entropy"`` (``value`` = γ, nats).
        value: the threshold or the budget.
        max_tokens: K_max, tokens per base forward at most.
    """

    name = "adjust_adaptive"
    uses_sampler = True

    def __init__(self, rule: str, value: float, max_tokens: int) -> None:
        if rule not in RULES:
            raise ValueError(f"AdaptiveAdjust: rule must be one of {RULES}, got {rule!r}")
        check_unit("AdaptiveAdjust", "value", value)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"AdaptiveAdjust: max_tokens (K_max) must be an int ≥ 1, got {max_tokens!r}")
        self.rule, self.value, self.max_tokens = rule, float(value), max_tokens

    def check(self, settings: SamplingSettings, sampler, backend: str, block_length: int | None) -> None:
        super().check(settings, sampler, backend, block_length)
        if self.rule == "threshold":
            check_probability_score(self.name, settings)
        elif settings.alg_temp:
            raise ValueError("decoding=adjust_adaptive: commits a prefix of the score order: alg_temp is not used")

    def tokens_per_step(self, remaining: torch.Tensor) -> torch.Tensor:
        """[B] most tokens each row may commit in a base step with ``remaining`` candidates."""
        return remaining.clamp(max=self.max_tokens)

    def commit(self, view: PassView, step: StepState) -> Decision:
        values = view.scores if self.rule == "threshold" else view.entropy()
        order, alive, v = in_score_order(view, values)
        if self.rule == "threshold":
            ok = alive & (v >= self.value)
        else:
            ok = entropy_prefix(v, alive, self.value, free_first=view.k == 0)
        rank = torch.arange(ok.shape[1], device=ok.device)
        if view.k == 0:
            ok = ok | (alive & (rank == 0))  # the fallback: progress every base forward
        budget = self.tokens_per_step(step.remaining) - step.committed
        take = ok & (rank[None] < budget[:, None]) & step.active[:, None]
        return Decision.of(view, unsort(order, take))

    def another_pass(self, step: StepState, k: int) -> bool:
        return k + 1 < self.max_tokens and bool((step.active & (step.committed < self.tokens_per_step(step.remaining))).any())

    def fused_rule(self) -> dict | None:
        return {"rule": self.rule, "value": self.value}

    def max_passes(self) -> int:
        return self.max_tokens

    def __repr__(self) -> str:
        return f"AdaptiveAdjust(rule={self.rule!r}, value={self.value}, max_tokens={self.max_tokens})"
