"""What a generation returns: the sequences, the unmask order, pass counts and the per-pass history."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepRecord:
    """What one pass committed: per row, the positions (in commit order), tokens and their log q.

    Within a pass, commit order is the policy's: best score first (ties to the lower position)
    for the score-ranked methods, left to right for APD. Fixed-K ADJUST commits at most one
    token per row and pass; the adaptive methods may commit several.
    """

    base_forward: int  # index of the base forward this pass belongs to
    pass_index: int  # 0 = scored from the base logits, k ≥ 1 = after k sampler passes
    positions: list[list[int]]
    tokens: list[list[int]]
    logprobs: list[list[float]]


@dataclass
class GenerationOutput:
    """Result of `generate`.

    `sequences` [B, P + N] holds the (left-padded) prompt and the generated tokens;
    `commit_pass` [B, P + N] the global pass index at which each position was
    unmasked (-1 for positions that were never masked): the unmask order.
    `row_forwards` [B]: the base forwards in which each row still had tokens to generate.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    commit_pass: torch.Tensor
    base_forwards: int
    sampler_passes: int
    seconds: float
    history: list[StepRecord] | None = field(default=None, repr=False)
    row_forwards: torch.Tensor | None = None

    @property
    def completions(self) -> torch.Tensor:
        """The generated region [B, N] (after the prompt)."""
        return self.sequences[:, self.prompt_length :]

    @property
    def tokens_generated(self) -> int:
        return int((self.commit_pass >= 0).sum())

    @property
    def tokens_per_forward(self) -> float:
        """TPF, the parallelism of the run: tokens committed per base forward of a row that had any
        left (a row that is done early does not dilute it)."""
        forwards = int(self.row_forwards.sum()) if self.row_forwards is not None else 0
        return self.tokens_generated / forwards if forwards else 0.0


def pass_record(base_forward: int, k: int, commit: torch.Tensor, x: torch.Tensor, logq: torch.Tensor,
                order: torch.Tensor) -> StepRecord:
    """The record of one eager pass: ``commit`` [B, L] ordered by ``order`` (higher first, ties to the lower position)."""
    keys = order.float().masked_fill(~commit, float("-inf")).cpu()
    ranked = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    pos = [ranked[b, : int(n)].tolist() for b, n in enumerate(commit.sum(-1).cpu())]
    xs, lq = x.cpu(), logq.cpu()
    return StepRecord(base_forward=base_forward, pass_index=k, positions=pos,
                      tokens=[xs[b, p].tolist() for b, p in enumerate(pos)],
                      logprobs=[lq[b, p].tolist() for b, p in enumerate(pos)])


def fused_record(base_forward: int, k: int, pos: torch.Tensor, x: torch.Tensor, logq: torch.Tensor) -> StepRecord:
    """The record of one fused pass: ``pos`` / ``logq`` [B, R], commit order, −1 padded."""
    pos, xs, lq = pos.cpu(), x.cpu(), logq.cpu()
    keep = [[int(p) for p in row if p >= 0] for row in pos]
    return StepRecord(base_forward=base_forward, pass_index=k, positions=keep,
                      tokens=[[int(xs[b, p]) for p in ps] for b, ps in enumerate(keep)],
                      logprobs=[[float(lq[b, j]) for j in range(len(ps))] for b, ps in enumerate(keep)])
