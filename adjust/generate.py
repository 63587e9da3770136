"""The generation engine: `generate` validates its arguments and runs the one decoding loop.

One *base forward* gives hidden states h0 = f(x). What happens next is the decoding policy's
(`adjust.decoding`); without ``decoding=`` it is today's fixed-count engine:

- ``sampler=None`` (naive parallel): K positions are chosen by score from the
  logits W·h0 and all K tokens are sampled from those same marginals;
- ``sampler=g`` (ADJUST, the paper's Alg. 1): one position is chosen and sampled
  from W·h0, then K−1 sampler passes h_{k+1} = g(h_k, x) each re-score the
  remaining candidates with W·h_{k+1} and commit one more token;
- ``K=1``: one token per base forward, i.e. exact sampling from the model's joint.

``decoding=`` takes any other policy: Fast-dLLM's confidence threshold, EB-sampler's entropy
bound, ADJUST-adaptive, and the paper's EDLM and APD baselines (docs/generation.md).

Generation is semi-autoregressive when ``block_length`` is set: a masked position is
a candidate once the current block reaches it (mask tokens inside the prompt are
candidates from the first block on, which gives infilling). With the fixed-count methods every
block takes ceil(masked / K) base forwards; the last step of a block may commit fewer than K.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import torch

from adjust.backends import BACKENDS, pass_sampler, resolve_backend
from adjust.base_cache import BaseForward, check_base_cache
from adjust.candidates import CandidateRestriction
from adjust.decoding.fixed import Adjust, Exact, Parallel
from adjust.decoding.loop import DecodingLoop
from adjust.decoding.output import GenerationOutput, StepRecord
from adjust.decoding.policy import DecodingPolicy
from adjust.models.adapter import DiffusionLMAdapter, as_adapter
from adjust.schedules import CommitSchedule, as_schedule
from adjust.unmasking import ALGS, SamplingSettings

__all__ = ["GenerationOutput", "StepRecord", "generate"]

# Below this, logits / temperature overflow fp32 for logits of ordinary size (|z| up to 1e8).
MIN_TEMPERATURE = 1e-30


def _check_batch_size(batch_size: int | None, ids: torch.Tensor) -> None:
    if batch_size is not None and batch_size != ids.shape[0]:
        raise ValueError(f"batch_size={batch_size!r} contradicts the {ids.shape[0]} prompts in input_ids "
                         "(leave batch_size unset when prompts are given)")


def _as_prompt_batch(
    input_ids, attention_mask, batch_size: int | None, adapter: DiffusionLMAdapter
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise the prompt argument to a left-padded [B, P] id tensor and its mask."""
    pad = adapter.pad_token_id if adapter.pad_token_id is not None else adapter.eos_token_id or 0
    if input_ids is None:
        if attention_mask is not None:
            raise ValueError("attention_mask: given without input_ids")
        batch_size = 1 if batch_size is None else batch_size
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
        start = [adapter.bos_token_id] if adapter.bos_token_id is not None else []
        ids = torch.tensor([start] * batch_size, dtype=torch.long).reshape(batch_size, len(start))
        return ids, torch.ones_like(ids)
    if isinstance(input_ids, (list, tuple)):
        if len(input_ids) == 0:
            raise ValueError("input_ids: empty batch")
        rows = [list(r) for r in input_ids]
        if not all(isinstance(t, int) and not isinstance(t, bool) for r in rows for t in r):
            raise TypeError("input_ids: a list of prompts must hold lists of int token ids")
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        if attention_mask is not None:
            raise ValueError("attention_mask: not accepted with a list of prompts (they are left-padded for you)")
        _check_batch_size(batch_size, ids)
        return ids, mask
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a LongTensor [B, P], a list of id lists or None, got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, P], got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids: empty batch")
    ids = input_ids.long()
    _check_batch_size(batch_size, ids)
    if attention_mask is None:
        if (adapter.pad_token_id is not None and adapter.pad_token_id not in (adapter.bos_token_id, adapter.mask_token_id)
                and ids.shape[1] > 1 and bool((ids[:, 0] == adapter.pad_token_id).any())):
            warnings.warn(f"input_ids: a row starts with the PAD id {adapter.pad_token_id} but no attention_mask was "
                          "given, so the padding is read as tokens; pass attention_mask (0 on padding)", stacklevel=3)
        return ids, torch.ones_like(ids)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    if attention_mask.is_complex() or not torch.all((attention_mask == 0) | (attention_mask == 1)):
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)].flatten()[0].item()
        raise ValueError(f"attention_mask must hold only 0 and 1, got {bad!r}")
    mask = attention_mask.long()
    if ids.shape[1] and bool((mask.sum(-1) == 0).any()):
        raise ValueError("attention_mask: a row has no real token (all zeros)")
    return ids, mask


def _validate_settings(K, temperature, top_p, top_k, alg, alg_temp, backend, seed=None, sampler=None) -> None:
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ValueError(f"K (tokens per base forward) must be an int ≥ 1, got {K!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number ≥ 0, got {temperature!r}")
    if 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature {temperature!r} is so small that logits / temperature overflow fp32; "
                         f"use temperature=0 for greedy decoding (any value ≥ {MIN_TEMPERATURE} works)")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be an int ≥ 1 or None, got {top_k!r}")
    if alg not in ALGS:
        raise ValueError(f"alg must be one of {ALGS}, got {alg!r}")
    if alg_temp is not None and (not isinstance(alg_temp, (int, float)) or not math.isfinite(alg_temp) or alg_temp < 0):
        raise ValueError(f"alg_temp must be a finite number ≥ 0 or None, got {alg_temp!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must fit in 64 bits (-2**63 ≤ seed < 2**63), got {seed}")
    if sampler is not None and not callable(getattr(sampler, "check_compatible", None)):
        hint = f"; load it with AdjustSampler.from_pretrained({sampler!r})" if isinstance(sampler, (str, Path)) else ""
        raise TypeError(f"sampler must be an AdjustSampler or None, got {type(sampler).__name__}{hint}")


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    *,
    K: int = 1,
    sampler=None,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    alg: str = "entropy",
    alg_temp: float | None = None,
    block_length: int | None = None,
    attention_mask: torch.Tensor | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    return_history: bool = False,
    progress: bool = False,
    backend: str = "torch",
    candidate_tokens: int | None = None,
    cache_context: bool = False,
    allow_base_mismatch: bool = False,
    decoding: DecodingPolicy | None = None,
    schedule: str | CommitSchedule = "k",
    sample_mask: bool = False,
    base_cache: str | None = None,
    base_cache_refresh: str = "block",
) -> GenerationOutput:
    """Generate with a masked diffusion LM, K tokens per base-model forward pass (or as ``decoding`` decides).

    Args:
        model: a `MaskedDiffusionLM`, or any model wrapped in a `DiffusionLMAdapter`.
        input_ids: prompts: a LongTensor [B, P] (left-padded, with `attention_mask`),
            a list of id lists of any lengths (left-padded for you), or None for
            unconditional generation from BOS (`batch_size` rows, default 1). Mask tokens
            inside the prompt are generated too (infilling). A tensor whose rows start
            with the PAD id and no `attention_mask` gets a warning.
        K: tokens committed per base forward (1 = exact joint sampling); values above
            the number of masked positions act as that number.
        sampler: an `AdjustSampler` for ADJUST; None = naive parallel sampling. It must
            have been trained for `model` (vocabulary, tokenizer and weight fingerprint).
        max_new_tokens: mask tokens appended after the prompt (may be 0 when the
            prompt itself holds masks).
        temperature, top_p, top_k: token sampling (Dream's order; T = 0 is greedy).
        alg: position score, one of ``entropy, confidence, margin, low_confidence, random``.
        alg_temp: > 0 samples positions from softmax(score / alg_temp) instead of top-K.
        block_length: semi-autoregressive block size; must divide `max_new_tokens`.
        seed: makes the run reproducible (same seed, same backend → same tokens).
        return_history: record, for every pass, the committed positions, tokens and log q.
        progress: show a progress bar over the tokens generated.
        backend: "torch" (the reference), "cpp" (compiled select-and-sample op),
            "triton" (fused LM-head/score/sample kernels and, for ADJUST and ADJUST-adaptive, the
            step's passes as one graph-capturable loop) or "auto"; see `adjust.backends`. Backends
            draw from different random streams: same seed, same backend → same tokens;
            across backends the distribution is the same, and at T = 0 the tokens.
        candidate_tokens: ADJUST only, torch or triton backend: sampler passes score and sample
            over each position's `candidate_tokens` best ids of the base logits (an
            approximation that reads that many rows of W instead of all V; see
            `adjust.candidates`). None = exact ADJUST.
        cache_context: ADJUST only: sampler passes update only the step's candidate
            rows; the other rows keep the base hidden states and their keys/values are
            computed once per base step (an approximation of g that makes the passes
            cost C rows instead of L; see `adjust.context_cache`). False = exact ADJUST.
        allow_base_mismatch: accept a sampler whose recorded base fingerprint differs
            from `model`'s (the same base re-saved); vocabulary and tokenizer must match.
        decoding: a decoding policy of `adjust.decoding` (``Threshold(tau)``, ``EntropyBound(gamma)``,
            ``AdaptiveAdjust(rule, value, K_max)``, ``EDLM(judge, K)``, ``APD(judge, weight)``, or
            ``Exact()`` / ``Parallel(K)`` / ``Adjust(K)``); it replaces ``K``, which must then stay 1.
            None = ``Adjust(K)`` with a sampler, ``Parallel(K)`` without.
        base_cache: semi-AR blocks only (``block_length``): reuse the base model's keys/values across a
            block's forwards (Fast-dLLM's KV cache; `adjust.base_cache`): ``"prefix"`` caches the prompt
            and the finished blocks, ``"dual"`` also the masked suffix; each block's first forward is a
            full one that rebuilds the cache, the later ones recompute only the block (prefix: the
            block and what follows it), and so do the sampler's passes at those steps
            (`adjust.sampler_block_cache`). An approximation (cached positions do not see the block's
            new tokens); None = no cache, exact.
        base_cache_refresh: ``"block"`` (Fast-dLLM's rule, the default) or ``"forward"``: rebuild the
            cache with a full forward before every windowed one (no speed-up; gives the uncached
            tokens — a check of the cached path).
        schedule: how many tokens each of a block's ceil(masks / K) base forwards commits
            (`adjust.schedules`): "k" (exactly K, the remainder last; the default), "dream"
            (Dream's eps-based counts), "llada" (LLaDA's even split, the remainder first) or a
            `CommitSchedule`; for the default policies (``decoding=None``; else pass it to
            ``Parallel(K, schedule)`` / ``Adjust(K, schedule)``). The triton backend's fused
            ADJUST loop takes "k" only.
        sample_mask: True keeps the [MASK] logit in the sampling and the scores, as Dream's
            and LLaDA's own generate do (a committed [MASK] leaves the position masked; it may
            end so). Parallel sampling only (``Parallel`` / ``Exact``, no sampler: samplers are
            trained without it).

    Returns:
        a `GenerationOutput` with the sequences, the unmask order and pass counts.
    """
    adapter = as_adapter(model)
    _validate_settings(K, temperature, top_p, top_k, alg, alg_temp, backend, seed, sampler)
    prompt, prompt_mask = _as_prompt_batch(input_ids, attention_mask, batch_size, adapter)
    if max_new_tokens is None:
        max_new_tokens = 0 if bool((prompt == adapter.mask_token_id).any()) else None
        if max_new_tokens is None:
            raise ValueError("max_new_tokens must be given (≥ 1) when the prompt holds no mask tokens")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int ≥ 0, got {max_new_tokens!r}")
    real = prompt_mask.bool()
    if prompt.numel() and bool(((prompt < 0) | (prompt >= adapter.vocab_size))[real].any()):
        bad = prompt[real & ((prompt < 0) | (prompt >= adapter.vocab_size))][0].item()
        raise ValueError(f"input_ids: token id {bad} is outside the vocabulary [0, {adapter.vocab_size})")
    if max_new_tokens == 0 and not bool((prompt[real] == adapter.mask_token_id).any()):
        raise ValueError("max_new_tokens is 0 and the prompt holds no mask tokens: nothing to generate")
    if block_length is not None:
        if not isinstance(block_length, int) or isinstance(block_length, bool) or block_length < 1:
            raise ValueError(f"block_length must be an int ≥ 1 or None, got {block_length!r}")
        if max_new_tokens % block_length:
            raise ValueError(f"block_length ({block_length}) must divide max_new_tokens ({max_new_tokens})")
    total = prompt.shape[1] + max_new_tokens
    if adapter.max_seq_len is not None and total > adapter.max_seq_len:
        raise ValueError(
            f"prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} = {total} exceeds "
            f"the model's context ({adapter.max_seq_len})"
        )
    if sampler is not None:
        sampler.check_compatible(adapter, allow_base_mismatch)
    if candidate_tokens is not None:
        if not isinstance(candidate_tokens, int) or isinstance(candidate_tokens, bool) or candidate_tokens < 1:
            raise ValueError(f"candidate_tokens must be an int ≥ 1 or None, got {candidate_tokens!r}")
        if sampler is None:
            raise ValueError("candidate_tokens restricts the sampler passes: it needs a sampler (ADJUST)")
    if not isinstance(cache_context, bool):
        raise TypeError(f"cache_context must be a bool, got {type(cache_context).__name__}")
    if cache_context and sampler is None:
        raise ValueError("cache_context changes the sampler passes: it needs a sampler (ADJUST)")

    check_base_cache(base_cache, base_cache_refresh, block_length, adapter,
                     bool((prompt[real] == adapter.mask_token_id).any()))

    if decoding is not None:
        if not isinstance(decoding, DecodingPolicy):
            raise TypeError(f"decoding must be an adjust.decoding policy or None, got {type(decoding).__name__}")
        if K != 1:
            raise ValueError(f"K={K} with decoding={decoding!r}: the policy sets the tokens per base forward "
                             "(leave K at 1)")
    if decoding is not None and as_schedule(schedule).name != "k":
        raise ValueError(f"schedule={schedule!r} with decoding={decoding!r}: give the schedule to the policy, "
                         "e.g. Parallel(K, schedule=...)")
    # More tokens per forward than any row can commit change nothing: clamp (K = 10**9 must not allocate K passes).
    K = min(K, max(1, max_new_tokens + int(((prompt == adapter.mask_token_id) & real).sum(-1).max())))
    policy = decoding if decoding is not None else (Parallel(K, schedule) if sampler is None
                                                    else Adjust(K, schedule))
    if not isinstance(sample_mask, bool):
        raise TypeError(f"sample_mask must be a bool, got {type(sample_mask).__name__}")
    if sample_mask and (sampler is not None or type(policy) not in (Parallel, Exact)):
        raise ValueError("sample_mask reproduces Dream/LLaDA's own parallel sampling (Parallel / Exact, no sampler): "
                         "samplers are trained, and the other policies score, with the mask token excluded")

    settings = SamplingSettings(temperature, top_p, top_k, alg, alg_temp, sample_mask)
    device = adapter.device
    run_seed = seed if seed is not None else int(torch.seed() % (2**63))
    generator = torch.Generator(device=device)
    generator.manual_seed(run_seed)
    backend = resolve_backend(backend, settings, device, restricted=candidate_tokens is not None)
    policy.check(settings, sampler, backend, block_length)
    sample = pass_sampler(backend, adapter, settings, generator, run_seed)
    restrict = None if candidate_tokens is None or backend != "torch" else CandidateRestriction(
        adapter, settings, generator, candidate_tokens)

    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, max_new_tokens), adapter.mask_token_id)], 1).to(device)
    attn = torch.cat([prompt_mask, torch.ones(B, max_new_tokens, dtype=torch.long)], 1).to(device)
    block_ends = [total] if block_length is None else list(range(P + block_length, total + 1, block_length))
    if not block_ends:  # infilling only, nothing appended
        block_ends = [total]
    fused_args = None
    if backend == "triton" and policy.fused_rule() is not None:
        fused_args = dict(seed=run_seed, candidate_tokens=candidate_tokens, cache_context=cache_context,
                          sampler_cache=base_cache is not None and not cache_context)
    loop = DecodingLoop(adapter, policy, sampler, settings, generator, sample, backend, restrict, cache_context,
                        return_history, progress, BaseForward(adapter, base_cache, base_cache_refresh))
    return loop.run(x, attn, block_ends, P, fused_args)
