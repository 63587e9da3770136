"""The fixed-count methods: exact (K = 1), naive parallel (K per base forward), ADJUST (K passes).

- :class:`Parallel`: pass 0 commits the ``min(remaining, K)`` best-scoring candidates, all
  sampled from the one base forward's marginals (the product of marginals);
- :class:`Adjust` (the paper's Alg. 1): pass 0 commits the best one, then K − 1 sampler passes
  each re-score the remaining candidates and commit one more (rows with fewer than K left stop
  early);
- :class:`Exact`: one token per base forward, i.e. exact sampling from the model's joint.

``generate(model, K=K, sampler=g)`` without ``decoding=`` runs ``Adjust(K)`` (``Parallel(K)``
without a sampler), exactly as the engine did before the policies existed. ``schedule=``
(`adjust.schedules`) changes how many of a block's ceil(masks / K) base steps commit: exactly
K (``"k"``, the default) or Dream's / LLaDA's own counts.
"""

from __future__ import annotations

import torch

from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState, top_by_score
from adjust.schedules import CommitSchedule, as_schedule


def _check_k(K) -> None:
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ValueError(f"K (tokens per base forward) must be an int ≥ 1, got {K!r}")


class Parallel(DecodingPolicy):
    """K tokens per base forward from one forward's marginals (K = 1: exact); ``schedule``: the
    per-step counts of `adjust.schedules` (default ``"k"``: exactly K, the remainder last)."""

    name = "parallel"

    def __init__(self, K: int, schedule: str | CommitSchedule = "k") -> None:
        _check_k(K)
        self.K = K
        self.schedule = as_schedule(schedule)

    def counts(self, step: StepState) -> torch.Tensor:
        """[B] tokens each row commits in this base step."""
        n = self.schedule.counts(step.block_step, step.block_steps, self.K, step.block_masks, step.remaining)
        if bool(((n < 0) | (n > step.remaining)).any()):  # a custom schedule broke its contract
            raise ValueError(f"schedule {self.schedule.name!r} asked for {n.tolist()} commits with "
                             f"{step.remaining.tolist()} candidates left")
        return n

    def commit(self, view: PassView, step: StepState) -> Decision:
        return Decision.of(view, top_by_score(view, self.counts(step)))

    def block_steps(self, block_size: int) -> int:
        return self.schedule.steps(block_size, self.K)

    def __repr__(self) -> str:
        schedule = "" if self.schedule.name == "k" else f", schedule={self.schedule.name!r}"
        return f"{type(self).__name__}(K={self.K}{schedule})"


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

    def check(self, settings, sampler, backend: str, block_length: int | None) -> None:
        super().check(settings, sampler, backend, block_length)
        if backend == "triton" and self.schedule.name != "k":
            raise ValueError(f"schedule={self.schedule.name!r}: the triton backend's fused ADJUST loop commits "
                             "K per base step (use backend='torch' or 'cpp')")

    def commit(self, view: PassView, step: StepState) -> Decision:
        n = (self.counts(step) > view.k).long()
        return Decision.of(view, top_by_score(view, n))

    def another_pass(self, step: StepState, k: int) -> bool:
        return bool((self.counts(step) > k + 1).any())

    def final_pass(self, step: StepState, k: int) -> bool:
        return not self.another_pass(step, k)  # the counts are fixed when the step starts

    def fused_rule(self) -> dict | None:
        return {}

    def max_passes(self) -> int:
        return self.K

    def tokens_per_step(self, remaining: torch.Tensor) -> torch.Tensor:
        """[B] tokens each row commits in a base step with ``remaining`` candidates."""
        return remaining.clamp(max=self.K)
