"""The autoregressive judge the paper's EDLM and APD baselines assume (their verifier/energy model).

A judge reads the engine's sequences ([B, L] ids, left-padded, with an attention mask, the
first real token being BOS) and gives, at every position i, the logits of token i given the
real tokens before it. The package has two kinds:

- a trained causal LM, `adjust.eval.judge.Judge` (the text judge, and the tasks judge trained
  by ``adjust train-judge --testbed tasks``);
- the exact likelihood where one exists: the synthetic HMM language's own conditionals,
  `adjust.data.synthetic.HMMJudge` (forward filtering; emissions smoothed as its
  ``nll_smoothed`` metric, so that every symbol string stays finite and comparable).

`judge_for_testbed` picks the shipped one for a testbed.
"""

from __future__ import annotations

import torch


class ARJudge:
    """Next-token logits of an autoregressive model over the engine's sequences."""

    vocab_size: int

    def next_token_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, V] float: row b, position i = logits of ``ids[b, i]`` given the real tokens before it
        (the first real token, BOS, and padding get zeros)."""
        raise NotImplementedError

    @torch.no_grad()
    def sequence_nll(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B] fp64 NLL (nats) of every real token after the first, i.e. −log p(sequence | BOS)."""
        logp = torch.log_softmax(self.next_token_logits(ids, attention_mask).double(), -1)
        if ids.max() >= logp.shape[-1]:
            raise ValueError(f"the judge's vocabulary has {logp.shape[-1]} ids; the sequence holds id {int(ids.max())}")
        # a row of all -inf logits (the exact HMM after an impossible token) gives NaN: probability 0
        nll = torch.nan_to_num(-logp.gather(-1, ids[..., None]).squeeze(-1), nan=float("inf"))
        real = attention_mask.bool()
        scored = real & (real.long().cumsum(-1) > 1)  # every real token but the first (BOS)
        return torch.where(scored, nll, 0.0).sum(-1)


def left_aligned(ids: torch.Tensor, attention_mask: torch.Tensor, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids with each row's real tokens moved to the front and ``fill`` after them, the shift [B])."""
    shift = (attention_mask == 0).long().cumprod(-1).sum(-1)  # leading padding per row
    L = ids.shape[1]
    src = torch.arange(L, device=ids.device)[None] + shift[:, None]
    moved = ids.gather(1, src.clamp(max=L - 1))
    return torch.where(src < L, moved, fill), shift


def judge_for_testbed(name: str) -> ARJudge:
    """The shipped judge of a testbed: ``synthetic`` → the exact HMM, ``tasks`` / ``text`` → the
    trained judges in ``adjust/assets/judges/``."""
    if name == "synthetic":
        from adjust.data.synthetic import HMMLanguage

        return HMMLanguage().judge()
    if name in ("tasks", "text"):
        from adjust.eval.judge import Judge

        return Judge.from_pretrained(name)
    raise ValueError(f"no shipped judge for testbed {name!r} (train one: adjust train-judge --testbed ... --out DIR)")
