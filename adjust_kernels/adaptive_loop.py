"""adaptive_loop: ADJUST-adaptive's passes of one base step at static shapes (no host sync, graph-capturable).

The static-shape twin of ``adjust.decoding.adaptive.AdaptiveAdjust`` (the eager torch policy, the
specification): the passes, the sampler g and the sampling are :class:`AdjustLoop`'s; only the commit
differs. ADJUST commits one argmax per pass; here every pass k computes a commit *mask* on device:

- sort the row's alive candidates by score (best first, ties to the lower slot, i.e. position);
- ``rule="threshold"`` (score = confidence, ``alg`` ``confidence`` / ``low_confidence``): the
  candidates with score ≥ τ; ``rule="entropy"`` (score = Σ p log p, ``alg="entropy"``, so
  H = −score): the longest prefix with Σ H − max H ≤ γ at pass 0 (EB-sampler), Σ H ≤ γ after;
- pass 0 always takes the best one (the fallback); the take is cut to the row's budget left
  (``n_passes[b]`` = min(candidates, K_max) at the call, minus what it committed) and to the rows
  still active (a row that commits nothing leaves the step).

The loop always runs ``num_passes`` = K_max passes (a row that left commits nothing more), so the
shapes never change and one CUDA graph holds them all. Commits land in ``x`` through ``scatter_add``
on a one-hot count (padding slots add zero), which is deterministic where slots share a position.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adjust_kernels.adjust_loop import AdjustLoop

RULES = {"threshold": ("confidence", "low_confidence"), "entropy": ("entropy",)}

__all__ = ["AdaptiveAdjustLoop"]


class AdaptiveAdjustLoop(AdjustLoop):
    """:class:`AdjustLoop` with ADJUST-adaptive's commit rule (module docstring).

    Calls return the workspaces ``positions`` [B, K, R] (int64, the positions committed at pass k in
    commit order, −1 padded; R = min(C, K)) and ``logprobs`` [B, K, R] (fp32 log q, 0 where padded).

    Args:
        rule: ``"threshold"`` or ``"entropy"``; value: τ or γ (nats).
        **kwargs: as :class:`AdjustLoop`; ``num_passes`` is K_max.
    """

    def __init__(self, sampler: torch.nn.Module, embed_weight: Tensor, lm_head_weight: Tensor,
                 lm_head_bias: Tensor | None = None, *, rule: str, value: float, **kwargs) -> None:
        super().__init__(sampler, embed_weight, lm_head_weight, lm_head_bias, **kwargs)
        if rule not in RULES:
            raise ValueError(f"AdaptiveAdjustLoop: rule must be one of {tuple(RULES)}, got {rule!r}")
        if self.sampling["alg"] not in RULES[rule]:
            raise ValueError(f"AdaptiveAdjustLoop: rule={rule!r} reads its value from the score, so alg must be one "
                             f"of {RULES[rule]}, got {self.sampling['alg']!r}")
        if not isinstance(value, (int, float)) or value != value or value < 0:
            raise ValueError(f"AdaptiveAdjustLoop: value must be a number ≥ 0, got {value!r}")
        self.rule, self.value = rule, float(value)
        B, _, C = self.shape
        self.width = min(C, self.num_passes)
        self.positions = torch.empty((B, self.num_passes, self.width), dtype=torch.int64, device=self.device)
        self.logprobs = torch.empty((B, self.num_passes, self.width), dtype=torch.float32, device=self.device)
        self._budget = torch.empty((B,), dtype=torch.int64, device=self.device)
        self._active = torch.empty((B,), dtype=torch.bool, device=self.device)
        self._rank = torch.arange(C, device=self.device)

    def _begin(self, n_passes: Tensor) -> None:
        self._budget.copy_(n_passes)
        self._active.fill_(True)

    def _commit(self, k: int, scores: Tensor, tokens: Tensor, logq: Tensor, x: Tensor, cand_idx: Tensor,
                alive: Tensor, n_passes: Tensor) -> None:
        """The commit mask of pass k, applied in place to x, alive, the budget and the active rows."""
        keys = scores.masked_fill(~alive, float("-inf"))
        order = torch.sort(keys, dim=1, descending=True, stable=True).indices
        alive_s = alive.gather(1, order)
        if self.rule == "threshold":
            ok = alive_s & (keys.gather(1, order) >= self.value)
        else:
            H = (-scores).masked_fill(~alive, 0.0).gather(1, order).double()
            spent = H.cumsum(1)
            if k == 0:  # EB-sampler: the largest entropy of the set is free
                spent = spent - H.cummax(1).values
            ok = alive_s & (spent <= self.value)
        if k == 0:
            ok = ok | (alive_s & (self._rank == 0))
        take = ok & (self._rank < self._budget[:, None]) & self._active[:, None]
        slots = torch.zeros_like(take).scatter(1, order, take)  # order is a permutation: no collisions
        at = cand_idx.clamp(min=0)
        hit = torch.zeros_like(x).scatter_add_(1, at, slots.long()) > 0
        new = torch.zeros_like(x).scatter_add_(1, at, torch.where(slots, tokens, 0))
        x.copy_(torch.where(hit, new, x))
        alive.logical_and_(~slots)
        n = take.sum(1)
        self._budget.sub_(n)
        self._active.logical_and_(n > 0)
        R = self.width
        self.positions[:, k].copy_(torch.where(take, cand_idx.gather(1, order), -1)[:, :R])
        self.logprobs[:, k].copy_(torch.where(take, logq.gather(1, order), 0.0)[:, :R])
