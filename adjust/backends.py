"""Backends of `generate`: who turns candidate hidden states into (token, score, log q).

- ``torch``: the specification (`adjust.unmasking.sample_tokens` on `W·h`);
- ``cpp``: the compiled `adjust_kernels.select_sample` op on `W·h` (C++/OpenMP, CUDA);
- ``triton``: the fused `adjust_kernels.lm_head_sample` (LM head + score + Gumbel-max,
  no [rows, V] logits), and, for ADJUST and ADJUST-adaptive, the whole step's passes as one
  static-shape `AdjustLoop` / `AdaptiveAdjustLoop` (no host syncs; CUDA-graph captured on GPUs);
- ``auto``: triton on CUDA, else cpp where built, else torch — each only where it
  covers the settings (cpp/triton: alg ≠ random, no alg_temp; candidate-restricted
  ADJUST: torch or triton).

Top-p / top-k (Dream's defaults) need a sort of each row, which no fused op streams: the
cpp backend samples the filtered logits (the filter runs in torch), and the triton
ops run their PyTorch twin for those rows (`lm_head_sample` materialises the logits
then; still on device, without host syncs, inside the captured loop).

Backends draw from different random streams: the same seed on the same backend gives
the same tokens; across backends tokens are equal at T = 0 and distributions at T > 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adjust.models.adapter import DiffusionLMAdapter
from adjust.unmasking import SamplingSettings, filter_logits, sample_tokens

BACKENDS = ("auto", "torch", "cpp", "triton")
FUSED_SCORES = ("entropy", "confidence", "margin", "low_confidence")

PassSampler = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _fits(s: SamplingSettings) -> bool:
    return s.alg in FUSED_SCORES and not s.alg_temp


def _filters(s: SamplingSettings) -> bool:
    return (s.top_p is not None and s.top_p < 1) or s.top_k is not None


def _triton_runnable(device: torch.device) -> bool:
    from adjust_kernels._triton_utils import interpreting

    return device.type == "cuda" or interpreting()


def resolve_backend(backend: str, s: SamplingSettings, device: torch.device, restricted: bool = False) -> str:
    """The concrete backend for these settings (``restricted``: candidate-restricted ADJUST, which the
    cpp backend lacks); explicit choices that cannot apply raise ValueError."""
    from adjust_kernels.select_sample import is_available

    if backend == "auto":
        if _fits(s) and _triton_runnable(device) and device.type == "cuda":
            return "triton"
        return "cpp" if _fits(s) and is_available(device) and not restricted else "torch"
    if backend == "cpp" and restricted:
        raise ValueError("candidate_tokens: the cpp backend has no restricted passes (use backend='torch' or 'triton')")
    if backend in ("cpp", "triton") and not _fits(s):
        raise ValueError(
            f"backend={backend!r} covers the {FUSED_SCORES} scores without alg_temp; "
            f"got alg={s.alg!r}, alg_temp={s.alg_temp} (use backend='torch')"
        )
    if backend == "cpp" and not is_available(device):
        raise ValueError(f"backend='cpp': the compiled op is not built for {device} (see docs/kernels.md)")
    if backend == "triton" and not _triton_runnable(device):
        raise ValueError(f"backend='triton' needs a CUDA device (or TRITON_INTERPRET=1 on CPU), got {device}")
    return backend


def check_finite(logits: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError(f"the {what} produced NaN/Inf logits: refusing to sample from them")


def pass_sampler(
    backend: str, adapter: DiffusionLMAdapter, s: SamplingSettings, generator: torch.Generator, seed: int
) -> PassSampler:
    """`(h_rows [N, d], pass index) -> (tokens, scores, log q)` for a concrete backend."""
    mask_id = None if s.sample_mask else adapter.mask_token_id  # the id never sampled (None: none)
    exclude = -1 if mask_id is None else mask_id  # the kernels' spelling of it
    if backend == "torch":

        def run(h_rows: torch.Tensor, pass_index: int):
            logits = adapter.logits(h_rows)
            check_finite(logits, "base model" if pass_index == 0 else "model or sampler")
            return sample_tokens(logits, s, mask_id, generator)

        return run
    if backend == "cpp":
        from adjust_kernels.select_sample import select_sample

        def run(h_rows: torch.Tensor, pass_index: int):
            logits = adapter.logits(h_rows)
            check_finite(logits, "base model" if pass_index == 0 else "model or sampler")
            z = filter_logits(logits, s, mask_id) if _filters(s) or s.temperature > 0 else None
            if not _filters(s):
                tokens, scores = select_sample(logits, s.temperature, s.alg, seed, pass_index, exclude)
            else:  # the op samples and scores the filtered logits; low_confidence is on the unfiltered ones
                tokens, scores = select_sample(logits.masked_fill(z == float("-inf"), float("-inf")), s.temperature,
                                               s.alg, seed, pass_index, exclude)
                if s.alg == "low_confidence":
                    raw = logits.float()
                    if mask_id is not None:
                        raw = raw.index_fill(1, torch.tensor([mask_id], device=logits.device), float("-inf"))
                    scores = torch.softmax(raw, -1).gather(1, tokens[:, None]).squeeze(1)
            if s.temperature > 0:
                logq = torch.log_softmax(z, -1).gather(1, tokens[:, None]).squeeze(1)
            else:
                logq = torch.zeros_like(scores)
            return tokens, scores, logq

        return run
    from adjust_kernels.lm_head_sample import lm_head_sample

    def run(h_rows: torch.Tensor, pass_index: int):
        seed_offset = torch.tensor([seed, pass_index], dtype=torch.int64, device=h_rows.device)
        tokens, scores, logq = lm_head_sample(h_rows.contiguous(), adapter.lm_head_weight, adapter.lm_head_bias,
                                              seed_offset, temperature=s.temperature, alg=s.alg,
                                              exclude_token=exclude, top_p=s.top_p, top_k=s.top_k)
        if bool((tokens < 0).any()):  # the eager engine may sync; the fused loop does not check
            raise FloatingPointError("NaN/Inf logits: a candidate row has no finite logit")
        return tokens, scores, logq

    return run


class FusedAdjustStep:
    """The passes of one ADJUST / ADJUST-adaptive base step as one static-shape call (triton backend):
    `adjust_kernels.AdjustLoop` for fixed-K ADJUST, `adjust_kernels.AdaptiveAdjustLoop` for the
    adaptive policy (its ``fused_rule`` names the commit rule).

    Candidates are fixed per base step and padded to the generation's largest count, so
    the loop keeps static shapes (and, on CUDA, one captured graph) for the whole run.
    """

    def __init__(self, adapter: DiffusionLMAdapter, sampler, s: SamplingSettings, policy, B: int, L: int,
                 max_candidates: int, attention_mask: torch.Tensor | None, seed: int,
                 candidate_tokens: int | None = None, cache_context: bool = False, sampler_cache: bool = False):
        from adjust_kernels.adaptive_loop import AdaptiveAdjustLoop
        from adjust_kernels.adjust_loop import AdjustLoop

        rule = policy.fused_rule()
        self.policy, self.num_passes = policy, policy.max_passes()
        loop = AdaptiveAdjustLoop if rule else AdjustLoop
        self.loop = loop(sampler, adapter.embed_tokens.weight, adapter.lm_head_weight, adapter.lm_head_bias,
                         batch_size=B, seq_len=L, num_candidates=max_candidates, num_passes=self.num_passes,
                         temperature=s.temperature, alg=s.alg, mask_token_id=adapter.mask_token_id,
                         attention_mask=attention_mask, top_p=s.top_p, top_k=s.top_k,
                         candidate_tokens=candidate_tokens, cache_context=cache_context,
                         sampler_cache=sampler_cache, **rule)
        if adapter.device.type == "cuda":
            self.loop.capture()  # not with sampler_cache (AdjustLoop.capture)
        self.C = max_candidates
        self.seed_offset = torch.tensor([seed, 0], dtype=torch.int64, device=adapter.device)

    def __call__(self, h: torch.Tensor, x: torch.Tensor, candidates: torch.Tensor,
                 window: tuple[int, int] | None = None):
        """Commit into x (in place); returns (positions [B, passes, R], logprobs [B, passes, R]) of the
        committed tokens, in commit order per pass, −1 / 0 padded (R = 1 for fixed-K ADJUST). ``window``:
        the base cache's recomputed rows at a block's later step (``sampler_cache``)."""
        C = self.C
        # ascending candidate positions, -1 padded: sort puts True (1) first, stable keeps order
        order = torch.sort(candidates.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :C]
        alive = candidates.gather(1, order)
        cand_idx = torch.where(alive, order, -1)
        n_row = self.policy.tokens_per_step(candidates.sum(-1))
        positions, logprobs = self.loop(h.contiguous(), x, cand_idx, alive.contiguous(), n_row, self.seed_offset,
                                        window)
        return (positions, logprobs) if positions.dim() == 3 else (positions[..., None], logprobs[..., None])
