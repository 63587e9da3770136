"""The fixed-count methods: exact (K = 1), naive parallel (K per base forward), ADJUST (K passes).

- :class:`Parallel`: pass 0 commits the ``min(remaining, K)`` best-scoring candidates, all
  sampled from the one base forward's marginals (the product of marginals);
- :class:`Adjust` (the paper's Alg. 1): pass 0 commits the best one, then K − 1 sampler passes
  each re-score the remaining candidates and commit one more (rows with fewer than K left stop
  early);
- :class:`Exact`: one token per base forward, i.e. exact sampling from the model's joint.

``generate(model, K=K, sampler=g)`` without ``decoding=`` runs ``Adjust(K)`` (``Parallel(K)``
without a sampler), exactly as the engine did before the policies existed.
"""

from __future__ import annotations

import torch

from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState, top_by_score


def _check_k(K) -> None:
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ValueError(f"K (tokens per base forward) must be an int ≥ 1, got {K!r}")


class Parallel(DecodingPolicy):
    """K tokens per base forward from one forward's marginals (K = 1: exact)."""

    name = "parallel"

    def __init__(self, K: int) -> None:
        _check_k(K)
        self.K = K

    def commit(self, view: PassView, step: StepState) -> Decision:
        return Decision.of(view, top_by_score(view, step.remaining.clamp(max=self.K)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.K})"


class Exact(Parallel):
    """One token per base forward: exact sampling from the model's joint."""

    name = "joint"

    def __init__(self) -> None:
        super().__init__(1)

    def __repr__(self) -> str:
        return "Exact()"


class Adjust(Parallel):
    """ADJUST: one token per pass, K passes per base forward (K − 1 of them sampler passes)."""

    name = "adjust"
    uses_sampler = True

    def commit(self, view: PassView, step: StepState) -> Decision:
        n = (step.remaining.clamp(max=self.K) > view.k).long()
        return Decision.of(view, top_by_score(view, n))

    def another_pass(self, step: StepState, k: int) -> bool:
        return bool((step.remaining.clamp(max=self.K) > k + 1).any())

    def fused_rule(self) -> dict | None:
        return {}

    def max_passes(self) -> int:
        return self.K

    def tokens_per_step(self, remaining: torch.Tensor) -> torch.Tensor:
        """[B] tokens each row commits in a base step with ``remaining`` candidates."""
        return remaining.clamp(max=self.K)
