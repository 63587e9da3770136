"""APD, adaptive parallel decoding (Israel et al. 2025, arXiv 2506.00413; ADJUST paper, App. B.2).

Strictly left to right. Per base forward: draft a token at every candidate position (the
first ``max_lookahead`` masked positions of the row, or all) from the forward's marginals;
run the autoregressive judge once over the drafted sequence; at each drafted position take
the argmax of the mixture ``w · l_diffusion + (1 − w) · l_judge`` of the two models' logits
(the diffusion logits untempered, mask id removed; the judge's at that position given the
drafted prefix); commit the longest prefix of drafted positions whose draft equals that
argmax — the first one always (progress every forward).

This follows the authors' code (github.com/danielmisrael/apd, ``dream/generation_utils.py``:
``apd_accept_criterion`` compares the draft with the mixture's argmax — its Gumbel noise is not
applied there — forces the first acceptance and takes the cumulative product), with their
``apd_mixture_weight`` as ``weight`` and ``max_lookahead`` as is. ``weight`` → 1 trusts the
diffusion model (long accepted prefixes, at T = 0 everything); ``weight`` = 0 accepts a draft
only where it is the judge's greedy choice. The commits are ordered left to right in the
history. The judge's vocabulary may be a prefix of the model's (ids past it are never the
mixture's argmax), as in the authors' use of Qwen for Dream.
"""

from __future__ import annotations

import math

import torch

from adjust.decoding.judge import ARJudge
from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState


class APD(DecodingPolicy):
    """Left-to-right drafts from the marginals, the prefix that agrees with the judge mixture committed."""

    name = "apd"

    def __init__(self, judge: ARJudge, weight: float, max_lookahead: int | None = None) -> None:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1 \
                or not math.isfinite(weight):
            raise ValueError(f"APD: weight (the mixture weight of the diffusion logits) must be in [0, 1], got {weight!r}")
        if max_lookahead is not None and (not isinstance(max_lookahead, int) or isinstance(max_lookahead, bool)
                                          or max_lookahead < 1):
            raise ValueError(f"APD: max_lookahead must be an int ≥ 1 or None, got {max_lookahead!r}")
        if not hasattr(judge, "next_token_logits"):
            raise TypeError(f"APD: judge must be an ARJudge, got {type(judge).__name__}")
        self.judge, self.weight, self.max_lookahead = judge, float(weight), max_lookahead

    def commit(self, view: PassView, step: StepState) -> Decision:
        cand = view.candidates
        rank = cand.long().cumsum(-1) - 1  # left-to-right index among the row's candidates
        window = cand & (rank < (self.max_lookahead or cand.shape[1]))
        judge_logits = self.judge.next_token_logits(view.tokens, view.attention_mask)[window].float()
        diff_logits = view.diffusion_logits(window).float()
        if judge_logits.shape[-1] > diff_logits.shape[-1]:
            raise ValueError(f"APD: the judge has {judge_logits.shape[-1]} ids, the model {diff_logits.shape[-1]}")
        pad = diff_logits.shape[-1] - judge_logits.shape[-1]
        judge_logits = torch.nn.functional.pad(judge_logits, (0, pad), value=float("-inf"))
        target = (self.weight * diff_logits + (1 - self.weight) * judge_logits).argmax(-1)
        agree = torch.ones_like(cand)
        agree[window] = view.tokens[window] == target
        agree |= ~window | (rank == 0)
        accept = window & agree.long().cumprod(-1).bool()
        positions = torch.arange(cand.shape[1], device=cand.device).expand_as(cand)
        return Decision.of(view, accept, order=-positions.float())

    def __repr__(self) -> str:
        return f"APD(weight={self.weight}, max_lookahead={self.max_lookahead}, judge={type(self.judge).__name__})"
