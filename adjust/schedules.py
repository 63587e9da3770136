"""Commit schedules: how many tokens each base forward of a block unmasks.

`generate(..., schedule=...)` runs every block in ``ceil(masks in the block / K)`` base
forwards (the most over the rows) and asks the schedule, at each step, how many of
each row's candidates to commit:

- ``"k"`` (`KPerForward`, the default): exactly K per forward, the remainder last —
  the package's rule, the one ADJUST's sampler is trained for;
- ``"dream"`` (`DreamSchedule`): Dream's ``diffusion_generate`` rule: over
  ``t = linspace(1, eps, steps + 1)``, step i commits ``int(m · (1 − t[i+1] / t[i]))``
  of a row's ``m`` masks left, and the last step all that are left. With ``eps = 1e-3``
  the first forward commits fewer than K (nothing at K = 1) and the last ones more (e.g.
  [3, 4, 4, 5] for 16 tokens at K = 4, [2, 2, 2, 3, 3, 4] at K = 3). Dream takes ``m`` as the batch's *mean*; it
  differs from each row's own count only where rows hold different numbers of masks
  (after a committed [MASK], or masks in the prompts), and there Dream can ask a row for
  more tokens than it has, which its topk fills by writing [MASK] over committed tokens.
  The package counts per row: Dream's result whenever its rows hold equal counts, and
  always Dream's result for each row run alone;
- ``"llada"`` (`LLaDASchedule`): LLaDA's ``generate`` rule: a block's masks are split
  evenly over its steps, the remainder on the *first* steps ([3, 3, 3, 3, 2, 2] for 16
  tokens at K = 3, where ``"k"`` gives [3, 3, 3, 3, 3, 1]).

``"dream"`` and ``"llada"`` with ``sample_mask=True`` reproduce those models' own
generation at T = 0 (docs/hf_models.md has the mapping of K to their ``steps`` and the
parity table). A count is never more than a row's candidates left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class CommitSchedule:
    """Per-step commit counts of a block (subclass and pass an instance as `generate(schedule=...)`)."""

    name: str = "custom"

    def steps(self, block_size: int, K: int) -> int:
        """Base forwards for a block whose fullest row has `block_size` masks."""
        return math.ceil(block_size / K)

    def counts(self, step: int, steps: int, K: int, block_masks: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """Tokens to commit per row at `step` of `steps` (int64 [B], ≤ `remaining`).

        `block_masks` [B]: each row's masks that entered this block (at its start);
        `remaining` [B]: each row's candidates now.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class KPerForward(CommitSchedule):
    """K per forward, the remainder of a block last (the package's rule)."""

    name = "k"

    def counts(self, step, steps, K, block_masks, remaining):
        return remaining.clamp(max=K)


@dataclass(frozen=True)
class DreamSchedule(CommitSchedule):
    """Dream ``diffusion_generate``'s counts, per row: ``int(m · (1 − s / t))`` over ``linspace(1, eps, steps + 1)``."""

    eps: float = 1e-3
    name = "dream"

    def __post_init__(self):
        if not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise ValueError(f"DreamSchedule eps must be in (0, 1), got {self.eps!r}")

    def counts(self, step, steps, K, block_masks, remaining):
        if step == steps - 1:
            return remaining
        # Dream's own float32 arithmetic, so that the truncation falls where Dream's does.
        t = torch.linspace(1, self.eps, steps + 1, device=remaining.device)
        return (remaining.float() * (1 - t[step + 1] / t[step])).long()


@dataclass(frozen=True)
class LLaDASchedule(CommitSchedule):
    """LLaDA ``generate``'s counts: each row's block masks split evenly, the remainder on the first steps."""

    name = "llada"

    def counts(self, step, steps, K, block_masks, remaining):
        n = block_masks // steps + (step < block_masks % steps).long()
        return torch.minimum(n, remaining)


SCHEDULES = {"k": KPerForward(), "dream": DreamSchedule(), "llada": LLaDASchedule()}


def as_schedule(schedule: str | CommitSchedule) -> CommitSchedule:
    """A schedule from its name (``"k"``, ``"dream"``, ``"llada"``) or a `CommitSchedule` instance."""
    if isinstance(schedule, CommitSchedule):
        return schedule
    if isinstance(schedule, str) and schedule in SCHEDULES:
        return SCHEDULES[schedule]
    raise ValueError(f"schedule must be one of {tuple(SCHEDULES)} or a CommitSchedule, got {schedule!r}")
