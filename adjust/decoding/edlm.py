"""EDLM, the paper's energy-based baseline (Xu et al. 2024, as run in the ADJUST paper, Sec. 4 and A.1).

Per base forward: draw ``num_draws`` (the paper: 2) complete unmasked strings, each candidate
position sampled independently from the forward's marginals; score each whole string with an
autoregressive judge (its NLL, i.e. the log of the paper's "generative perplexity" times the
length, the same ordering); keep the string with the lower NLL (ties: the first drawn); then
re-mask it with the base model's unmasking rule, so that K positions are committed: the K
best-scoring candidates by the kept draw's own scores (``alg``).

The judge is any `adjust.decoding.judge.ARJudge` — the ADJUST paper uses Qwen2.5-0.5B; here
the exact HMM likelihood on ``synthetic`` and the package's trained judges on ``tasks`` and
``text`` (`judge_for_testbed`). EDLM completes every masked position, so it runs without
``block_length``, and on the torch backend (its second draw comes from the torch generator).

The history's log q is that of the committed draw under the marginals; the judge's choice
between draws changes the distribution actually sampled, so the per-step joint KL estimate of
`adjust.eval.joint_kl` does not apply to EDLM.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from adjust.decoding.fixed import _check_k
from adjust.decoding.judge import ARJudge
from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState, top_by_score
from adjust.unmasking import SamplingSettings


class EDLM(DecodingPolicy):
    """K tokens per base forward from the lowest-judge-NLL of ``num_draws`` complete draws."""

    name = "edlm"

    def __init__(self, judge: ARJudge, K: int, num_draws: int = 2) -> None:
        _check_k(K)
        if not isinstance(num_draws, int) or isinstance(num_draws, bool) or num_draws < 1:
            raise ValueError(f"EDLM: num_draws must be an int ≥ 1, got {num_draws!r}")
        if not hasattr(judge, "sequence_nll"):
            raise TypeError(f"EDLM: judge must be an ARJudge, got {type(judge).__name__}")
        self.judge, self.K, self.num_draws = judge, K, num_draws

    def check(self, settings: SamplingSettings, sampler, backend: str, block_length: int | None) -> None:
        super().check(settings, sampler, backend, block_length)
        if block_length is not None:
            raise ValueError("decoding=edlm: the judge scores complete strings, so every masked position is "
                             "drawn: block_length is not supported")
        if backend != "torch":
            raise ValueError(f"decoding=edlm: runs on backend='torch' (its extra draws use the torch generator), "
                             f"got {backend!r}")

    def commit(self, view: PassView, step: StepState) -> Decision:
        best, best_nll = view, self.judge.sequence_nll(view.tokens, view.attention_mask)
        for _ in range(self.num_draws - 1):
            other = view.resample()
            nll = self.judge.sequence_nll(other.tokens, view.attention_mask)
            better = (nll < best_nll).to(view.tokens.device)[:, None]
            best = _choose(better, other, best)
            best_nll = torch.minimum(nll, best_nll)
        return Decision.of(best, top_by_score(best, step.remaining.clamp(max=self.K)))

    def __repr__(self) -> str:
        return f"EDLM(K={self.K}, num_draws={self.num_draws}, judge={type(self.judge).__name__})"


def _choose(pick: torch.Tensor, a: PassView, b: PassView) -> PassView:
    """Per row: ``a``'s draw where ``pick`` [B, 1], else ``b``'s."""
    return replace(b, tokens=torch.where(pick, a.tokens, b.tokens), scores=torch.where(pick, a.scores, b.scores),
                   logq=torch.where(pick, a.logq, b.logq))
