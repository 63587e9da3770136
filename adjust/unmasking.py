"""Unmasking rules and token sampling: the pure-PyTorch specification.

Follows Dream's `sample_tokens` order exactly: logits / temperature (T = 0 means
greedy), then top-p, then top-k, then an fp32 softmax; a token is sampled at every
candidate position and each position gets a score (higher = unmask first):

- ``entropy``        Σ p log p (negative entropy; Dream's default in the paper)
- ``confidence``     p of the sampled token (Dream ``maskgit_plus``)
- ``margin``         top-1 p − top-2 p (Dream ``topk_margin``)
- ``low_confidence`` softmax of the *untempered* logits at the sampled token (LLaDA)
- ``random``         uniform random score (LLaDA ``random`` remasking)

Positions are then chosen by score: the top-n, or, with ``alg_temp > 0``, n draws
without replacement from softmax(score / alg_temp) (Dream), done here with the
equivalent Gumbel-top-n trick. The mask token is never sampled, unless
``sample_mask`` keeps it as Dream's and LLaDA's own generate do (callers then pass
``mask_token_id=None``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Defined in the kernel package (the kernels' references share them); adjust.unmasking's names for users.
from adjust_kernels.sampling_settings import SamplingSettings, filter_logits

ALGS = ("entropy", "confidence", "margin", "low_confidence", "random")


def sample_tokens(
    logits: torch.Tensor,
    s: SamplingSettings,
    mask_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample a token per row of `logits` [N, V] and score the row.

    Returns (tokens int64 [N], scores fp32 [N], logprobs fp32 [N]) where `logprobs`
    is log q(token) under the distribution the token was drawn from (at T = 0 the
    greedy choice has log-prob 0 by convention: it is deterministic).
    """
    z = filter_logits(logits, s, mask_token_id)
    probs = F.softmax(z, dim=-1)
    if s.temperature > 0:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        logprobs = torch.log_softmax(z, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    else:
        tokens = z.argmax(dim=-1)  # argmax of logits, not of rounded probabilities: same rule as the kernels
        logprobs = torch.zeros(tokens.shape, dtype=torch.float32, device=logits.device)
    p_tok = probs.gather(-1, tokens[:, None]).squeeze(-1)
    if s.alg == "entropy":
        scores = torch.special.xlogy(probs, probs).sum(-1)
    elif s.alg == "confidence":
        scores = p_tok
    elif s.alg == "margin":
        top2 = torch.topk(probs, min(2, probs.shape[-1]), dim=-1).values
        scores = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)
    elif s.alg == "low_confidence":
        raw = logits.float().clone()
        if mask_token_id is not None:
            raw[..., mask_token_id] = float("-inf")
        scores = F.softmax(raw, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    elif s.alg == "random":
        scores = torch.rand(tokens.shape, generator=generator, device=logits.device)
    else:
        raise ValueError(f"alg must be one of {ALGS}, got {s.alg!r}")
    return tokens, scores.float(), logprobs


def position_entropy(logits: torch.Tensor, s: SamplingSettings, mask_token_id: int | None = None) -> torch.Tensor:
    """Entropy (nats) [N] of each row's sampling distribution (the ``entropy`` score, negated)."""
    probs = F.softmax(filter_logits(logits, s, mask_token_id), dim=-1)
    return -torch.special.xlogy(probs, probs).sum(-1)


def select_positions(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    n: torch.Tensor,
    alg_temp: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose `n[b]` candidate positions per row by score; returns a bool mask [B, L].

    `scores` [B, L] is read only where `candidates` is true; n[b] ≤ candidates[b].sum().
    Ties go to the lower position (stable sort), so every backend picks the same set.
    """
    keys = scores.float()
    if alg_temp:
        u = torch.rand(keys.shape, generator=generator, device=keys.device).clamp_(min=1e-20)
        keys = keys / alg_temp - torch.log(-torch.log(u))
    keys = keys.masked_fill(~candidates, float("-inf"))
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    take = torch.arange(keys.shape[1], device=keys.device)[None, :] < n[:, None]
    return torch.zeros_like(candidates).scatter(1, order, take)
