"""What a decoding policy sees after each pass, and what it answers.

The shared loop (`adjust.decoding.loop`) runs, per base forward: the base model, then pass 0
(tokens and scores from the base logits), then, while the policy asks for it, sampler passes
(ADJUST's g, each conditioned on the tokens committed so far). After every pass it hands the
policy a :class:`PassView` and commits the positions the :class:`Decision` names. A policy
therefore answers two questions only:

- :meth:`DecodingPolicy.commit`: which candidate positions to commit after this pass (and,
  for the judge-based baselines, which of several drawn proposals to commit from);
- :meth:`DecodingPolicy.another_pass`: whether one more sampler pass runs in this base step.

Per-row bookkeeping of the current base step (candidates at its start, tokens committed so
far, rows still taking passes) is the loop's :class:`StepState`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adjust.unmasking import SamplingSettings


@dataclass
class PassView:
    """One pass's proposal: a token, a score and log q at every candidate position.

    All tensors are [B, L]; outside ``candidates`` ``tokens`` holds the current token and
    ``scores`` / ``logq`` hold 0. ``k`` is the pass index within the base step (0 = base
    logits, k ≥ 1 = after k sampler passes); ``h`` the hidden states the proposal came from.
    """

    k: int
    x: torch.Tensor
    attention_mask: torch.Tensor
    candidates: torch.Tensor
    tokens: torch.Tensor
    scores: torch.Tensor
    logq: torch.Tensor
    h: torch.Tensor
    settings: SamplingSettings
    generator: torch.Generator
    entropy_fn: Callable[[], torch.Tensor] = field(repr=False)
    logits_fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    resample_fn: Callable[[], PassView] | None = field(default=None, repr=False)

    def entropy(self) -> torch.Tensor:
        """[B, L] entropy (nats) of each candidate's sampling distribution (0 elsewhere)."""
        return self.entropy_fn()

    def diffusion_logits(self, where: torch.Tensor) -> torch.Tensor:
        """[N, V] untempered logits of this pass at the positions ``where`` [B, L] (mask id at -inf)."""
        return self.logits_fn(where)

    def resample(self) -> PassView:
        """Another independent draw at the same candidates from the same hidden states."""
        if self.resample_fn is None:
            raise RuntimeError("this pass cannot be re-drawn (only the torch backend's pass 0 can)")
        return self.resample_fn()


@dataclass
class StepState:
    """The current base step, per row: candidates at its start, tokens committed so far, and
    whether the row still takes passes (a row leaves when a sampler pass commits nothing); and
    where the step lies in its block (for the commit schedules of `adjust.schedules`)."""

    remaining: torch.Tensor  # [B] candidates when the base forward ran
    committed: torch.Tensor  # [B] tokens committed in this step so far
    active: torch.Tensor  # [B] bool
    block_step: int  # index of this base step in its block
    block_steps: int | None  # the block's base steps at most (`DecodingPolicy.block_steps`), None: unbounded
    block_masks: torch.Tensor  # [B] masks that entered the block at its start

    @classmethod
    def start(cls, candidates: torch.Tensor, block_step: int, block_steps: int | None,
              block_masks: torch.Tensor) -> StepState:
        remaining = candidates.sum(-1)
        return cls(remaining, torch.zeros_like(remaining), remaining > 0, block_step, block_steps, block_masks)

    def update(self, commit: torch.Tensor, k: int) -> None:
        n = commit.sum(-1)
        self.committed += n
        if k > 0:
            self.active &= n > 0


@dataclass
class Decision:
    """What to commit after a pass: ``mask`` [B, L] (⊆ the candidates), the tokens and log q to
    commit there (default: the view's), and ``order`` [B, L], the keys that order the commits
    of one pass in the history (higher first; default: the scores)."""

    mask: torch.Tensor
    tokens: torch.Tensor
    logq: torch.Tensor
    order: torch.Tensor

    @classmethod
    def of(cls, view: PassView, mask: torch.Tensor, order: torch.Tensor | None = None) -> Decision:
        return cls(mask, view.tokens, view.logq, view.scores if order is None else order)


class DecodingPolicy:
    """Base class of the decoding methods (see the module docstring).

    Attributes:
        name: the method's name in eval records.
        uses_sampler: whether the method runs ADJUST sampler passes (needs ``sampler=``).
    """

    name = "policy"
    uses_sampler = False

    def check(self, settings: SamplingSettings, sampler, backend: str, block_length: int | None) -> None:
        """Raise ValueError if the policy cannot run with these settings."""
        if self.uses_sampler and sampler is None:
            raise ValueError(f"decoding={self.name}: needs a sampler (ADJUST)")
        if not self.uses_sampler and sampler is not None:
            raise ValueError(f"decoding={self.name}: runs no sampler passes; pass sampler=None")

    def commit(self, view: PassView, step: StepState) -> Decision:
        raise NotImplementedError

    def another_pass(self, step: StepState, k: int) -> bool:
        """After pass ``k`` was committed: run sampler pass k + 1? (Default: never.)"""
        return False

    def final_pass(self, step: StepState, k: int) -> bool:
        """Before sampler pass k ≥ 1: is it certainly the step's last? Then the loop applies g to the
        candidates' rows only (exact there; nothing reads the other rows later). Default: at the
        ``max_passes()`` bound."""
        return k + 1 >= self.max_passes()

    def fused_rule(self) -> dict | None:
        """How the triton backend runs this policy's passes (`adjust.backends.FusedAdjustStep`): None =
        the eager loop (with the fused LM-head sampling); ``{}`` = `AdjustLoop` (one commit per pass);
        ``{"rule": ..., "value": ...}`` = `AdaptiveAdjustLoop` with that commit rule."""
        return None

    def max_passes(self) -> int:
        """Passes per base step at most (the fused loop's static count)."""
        return 1

    def block_steps(self, block_size: int) -> int | None:
        """Base steps a block whose fullest row has ``block_size`` masks runs at most (None: until it has no
        candidates left; a bound is what ends a block where a committed [MASK] stays masked)."""
        return None


def top_by_score(view: PassView, n: torch.Tensor) -> torch.Tensor:
    """The engine's position choice: the ``n[b]`` best-scoring candidates of each row (or, with
    ``alg_temp``, n draws without replacement from softmax(score / alg_temp))."""
    from adjust.unmasking import select_positions

    return select_positions(view.scores, view.candidates, n, view.settings.alg_temp, view.generator)


def in_score_order(view: PassView, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order [B, L], candidates in that order, ``values`` in that order): candidates sorted by score,
    best first, ties to the lower position, non-candidates last."""
    keys = view.scores.masked_fill(~view.candidates, float("-inf"))
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    return order, view.candidates.gather(1, order), values.gather(1, order)


def unsort(order: torch.Tensor, take_sorted: torch.Tensor) -> torch.Tensor:
    """The [B, L] mask whose entries at ``order`` are ``take_sorted``."""
    return torch.zeros_like(take_sorted).scatter(1, order, take_sorted)
