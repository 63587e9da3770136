"""Per-step joint KL: how far one denoising step's K tokens are from exact sampling.

For every base step, the K committed tokens x_1..x_K (in commit order) were drawn
with probability q = Π_j q_j(x_j) by the method under test (all q_j from the same
base forward for naive parallel; from successive sampler passes for ADJUST). The
model's true joint gives them p* = Π_j p(x_j | state with x_1..x_{j−1} committed),
computed here with one base forward per token. The average of log q − log p* over
steps and rows, divided by the tokens, is a Monte-Carlo estimate of KL(q ‖ p*) in
nats per token: exactly 0 for K = 1, and what ADJUST is trained to shrink.
Both sides use the same sampling settings (temperature, top-p, top-k). At T = 0
the methods are deterministic and the estimate is not defined (NaN).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from adjust.generate import GenerationOutput
from adjust.models.adapter import as_adapter
from adjust.unmasking import SamplingSettings, filter_logits


@torch.no_grad()
def per_step_joint_kl(model, out: GenerationOutput, settings: SamplingSettings,
                      first_exact: bool = False) -> dict[str, float]:
    """KL(q ‖ p*) per token of a generation run with `return_history=True` (``first_exact``: see
    `commit_log_ratios`).

    Returns `{"joint_kl": nats/token, "joint_kl_tokens": tokens counted}`.
    """
    if out.history is None:
        raise ValueError("out: run generate(..., return_history=True) to measure the per-step joint KL")
    if settings.temperature == 0:
        return {"joint_kl": math.nan, "joint_kl_tokens": 0}
    total, count = 0.0, 0
    for _, log_ratio in commit_log_ratios(model, out, settings, first_exact):
        total += float(log_ratio.sum())
        count += log_ratio.numel()
    return {"joint_kl": total / max(count, 1), "joint_kl_tokens": count}


@torch.no_grad()
def commit_log_ratios(model, out: GenerationOutput, settings: SamplingSettings, first_exact: bool = False):
    """Per commit of `out` (history needed, T > 0), in commit order: (positions still masked before it [n],
    log q − log p* of its token [n]) over the n rows that commit it; their mean is the joint KL.

    ``first_exact``: the caller vouches that the first token of every base step was drawn from that
    step's own base forward (plain `generate` with ADJUST or naive parallel on the torch backend: no
    base cache, no other decoding rule), so its p* is its q: its log ratio is 0 (still a token of the
    mean) and its base forward is skipped — 1/K of this function's forwards. Not for cached bases
    (their q is not p*: that difference is what the KL must count) nor rules such as EDLM's."""
    adapter = as_adapter(model)
    x = out.sequences.clone()
    x[out.commit_pass >= 0] = adapter.mask_token_id
    attn = None if bool(out.attention_mask.all()) else out.attention_mask
    steps: dict[int, list] = defaultdict(list)
    for rec in out.history:
        steps[rec.base_forward].append(rec)
    B = x.shape[0]
    for f in sorted(steps):
        seq = [[t for r in steps[f] for t in zip(r.positions[b], r.tokens[b], r.logprobs[b])] for b in range(B)]
        for j in range(max(len(s) for s in seq)):
            rows = [b for b in range(B) if j < len(seq[b])]
            pos = torch.tensor([seq[b][j][0] for b in rows])
            tok = torch.tensor([seq[b][j][1] for b in rows])
            left = ((x[rows] == adapter.mask_token_id) & out.attention_mask[rows].bool()).sum(1).cpu()
            if j == 0 and first_exact:
                ratio = torch.zeros(len(rows), dtype=torch.float64)
            else:
                h = adapter.hidden(x, attn)
                z = filter_logits(adapter.logits(h[rows, pos]), settings, adapter.mask_token_id)
                logp = torch.log_softmax(z, -1).gather(1, tok[:, None].to(z.device)).squeeze(1).cpu()
                ratio = torch.tensor([seq[b][j][2] for b in rows]) - logp.double()
            yield left, ratio
            x[rows, pos] = tok.to(x.device)
