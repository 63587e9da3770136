"""The one decoding loop: base forward, then passes, then commit — the policy decides the rest.

Per semi-autoregressive block, while the block has masked positions (and for at most the
policy's `block_steps` base steps: a [MASK] committed under ``sample_mask`` stays masked): one base forward
``h = f(x)`` (with ``base_cache``, a forward over the block's window with the other positions'
keys/values from the block cache, `adjust.base_cache`); pass 0 samples a token and a score at every candidate (masked, inside the
block) from ``W h``; the policy (`adjust.decoding.policy`) names the positions to commit; while
it asks for more, a sampler pass ``h = g(h, x)`` (or its context-cached variant; with ``base_cache``,
over the base's window, `adjust.sampler_block_cache`) re-scores the
remaining candidates and the policy commits again. Every pass that commits has a global index
(the ``commit_pass`` of what it commits); every pass run advances the compiled backends' RNG offset.

On the triton backend the passes of the policies that have a fused form (`fused_rule`: ADJUST,
ADJUST-adaptive) run as one static-shape call per base step instead (`FusedAdjustStep`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

import torch

from adjust.backends import FusedAdjustStep, PassSampler
from adjust.base_cache import BaseForward
from adjust.candidates import CandidateRestriction
from adjust.context_cache import ContextCache
from adjust.decoding.output import GenerationOutput, StepRecord, fused_record, pass_record
from adjust.decoding.policy import DecodingPolicy, PassView, StepState
from adjust.models.adapter import DiffusionLMAdapter
from adjust.progress import progress_bar
from adjust.sampler_block_cache import SamplerBlockCache
from adjust.unmasking import SamplingSettings, position_entropy


class DecodingLoop:
    """One generation's loop (built and run by `adjust.generate`)."""

    def __init__(self, adapter: DiffusionLMAdapter, policy: DecodingPolicy, sampler, settings: SamplingSettings,
                 generator: torch.Generator, sample: PassSampler, backend: str, restrict: CandidateRestriction | None,
                 cache_context: bool, record_history: bool, progress: bool,
                 base_forward: BaseForward | None = None) -> None:
        self.adapter, self.policy, self.sampler, self.settings = adapter, policy, sampler, settings
        self.base = base_forward if base_forward is not None else BaseForward(adapter)
        self.generator, self.sample, self.backend, self.restrict = generator, sample, backend, restrict
        self.cache_context, self.progress = cache_context, progress
        # with a base cache, g's passes follow its window (adjust.sampler_block_cache)
        self.sampler_cache = (SamplerBlockCache(sampler, adapter)
                              if self.base.mode is not None and sampler is not None and not cache_context else None)
        self.history: list[StepRecord] | None = [] if record_history else None
        # pass_counter numbers the passes that commit (commit_pass); rng_offset counts every pass run
        # (the compiled backends' random stream offset)
        self.base_forwards = self.sampler_passes = self.pass_counter = self.rng_offset = 0

    def run(self, x: torch.Tensor, attn: torch.Tensor, block_ends: list[int], prompt_length: int,
            fused_args: dict | None = None) -> GenerationOutput:
        """Decode every masked position of ``x`` [B, L] (blocks end at ``block_ends``); ``fused_args``:
        the `FusedAdjustStep` arguments where the triton backend runs the passes fused."""
        device = x.device
        mask_id = self.adapter.mask_token_id
        attn_arg = None if bool(attn.all()) else attn
        self.commit_pass = torch.full_like(x, -1)
        row_forwards = torch.zeros(x.shape[0], dtype=torch.long, device=device)
        positions = torch.arange(x.shape[1], device=device)
        is_masked = (x == mask_id) & attn.bool()
        fused = None
        if fused_args is not None:
            largest, first = 0, torch.zeros(x.shape[0], dtype=torch.long, device=device)
            for end in block_ends:  # the most candidates any base step can have: the fused loop's width
                in_block = (is_masked & (positions < end)).sum(-1)
                largest, first = max(largest, int((in_block - first).max())), in_block
            fused = FusedAdjustStep(self.adapter, self.sampler, self.settings, self.policy, x.shape[0], x.shape[1],
                                    largest, attn_arg, **fused_args)
        bar = progress_bar(total=int(is_masked.sum()), desc=f"generate {self.policy!r}", disable=not self.progress,
                           unit="tok")
        t0 = time.perf_counter()
        entered = torch.zeros(x.shape[0], dtype=torch.long, device=device)
        start = prompt_length
        for end in block_ends:
            in_block = (is_masked & (positions < end)).sum(-1)
            block_masks, entered = in_block - entered, in_block
            block_steps = self.policy.block_steps(int(block_masks.max()))
            for block_step in itertools.count():
                candidates = (x == mask_id) & attn.bool() & (positions < end)
                if not bool(candidates.any()) or (block_steps is not None and block_step == block_steps):
                    break
                h = self.base(x, attn_arg, start, end, block_step == 0)
                self.base_forwards += 1
                row_forwards += candidates.any(-1)
                before = int(candidates.sum())
                if fused is not None:
                    self._fused_step(fused, h, x, candidates)
                else:
                    step = StepState.start(candidates, block_step, block_steps, block_masks)
                    x = self._step(h, x, attn, attn_arg, candidates, step)
                bar.update(before - int(((x == mask_id) & candidates).sum()))
            start = end
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return GenerationOutput(sequences=x, attention_mask=attn, prompt_length=prompt_length,
                                commit_pass=self.commit_pass, base_forwards=self.base_forwards,
                                sampler_passes=self.sampler_passes, seconds=time.perf_counter() - t0,
                                history=self.history, row_forwards=row_forwards.cpu(),
                                cached_forwards=self.base.cached_forwards)

    def _step(self, h: torch.Tensor, x: torch.Tensor, attn: torch.Tensor, attn_arg: torch.Tensor | None,
              candidates: torch.Tensor, step: StepState) -> torch.Tensor:
        """One base step of the eager loop: pass 0, then sampler passes while the policy asks."""
        context, k, x_base = None, 0, x
        if self.sampler_cache is not None:
            self.sampler_cache.start_step(self.base.window)
        while True:
            cand = candidates & (x == self.adapter.mask_token_id)
            if k > 0:
                xg = self.sampler.input_tokens(x, x_base, self.adapter.mask_token_id)
                if self.cache_context:
                    context = context or ContextCache(self.sampler, self.adapter, h, xg, attn_arg, candidates)
                    h = context(h, xg)
                elif self.sampler_cache is not None:
                    h = self.sampler_cache(h, xg, attn_arg, k, cand if self.policy.final_pass(step, k) else None)
                elif self.policy.final_pass(step, k):  # nothing reads its other rows (adjust.context_cache)
                    h = self.sampler.forward_rows(h, xg, self.adapter, attn_arg, cand)
                else:
                    h = self.sampler(h, xg, self.adapter, attn_arg)
                self.sampler_passes += 1
            view = self._propose(h, x, attn, cand, k)
            decision = self.policy.commit(view, step)
            commit = decision.mask & cand
            self.rng_offset += 1
            if bool(commit.any()):  # a pass that commits nothing (an adaptive rule's last) gets no number
                x = torch.where(commit, decision.tokens, x)
                self.commit_pass[commit] = self.pass_counter
                self.pass_counter += 1
                if self.history is not None:
                    self.history.append(pass_record(self.base_forwards - 1, k, commit, x, decision.logq,
                                                    decision.order))
            step.update(commit, k)
            if not (self.policy.uses_sampler and self.policy.another_pass(step, k)):
                return x
            k += 1

    def _propose(self, h: torch.Tensor, x: torch.Tensor, attn: torch.Tensor, cand: torch.Tensor, k: int) -> PassView:
        """Sample a token, a score and log q at every candidate of ``cand`` from ``W h``."""
        if self.restrict is not None:
            tokens, scores, logq = self.restrict(h, cand, k)
        else:
            tokens, scores, logq = self.sample(h[cand], self.rng_offset)
        full_scores = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        full_scores[cand] = scores
        proposal = x.clone()
        proposal[cand] = tokens
        full_logq = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        full_logq[cand] = logq
        resample = None
        if self.backend == "torch" and self.restrict is None:
            resample = lambda: self._propose(h, x, attn, cand, k)  # noqa: E731  (a fresh draw, same h)
        return PassView(k=k, x=x, attention_mask=attn, candidates=cand, tokens=proposal, scores=full_scores,
                        logq=full_logq, h=h, settings=self.settings, generator=self.generator,
                        entropy_fn=self._entropy(h, cand, full_scores), logits_fn=self._logits(h),
                        resample_fn=resample)

    def _entropy(self, h: torch.Tensor, cand: torch.Tensor, scores: torch.Tensor) -> Callable[[], torch.Tensor]:
        """The candidates' entropies, computed on demand: the negated score when ``alg`` is entropy
        (every backend, no extra work), else from the logits (one more LM-head product)."""

        def entropy() -> torch.Tensor:
            if self.settings.alg == "entropy":
                return -scores
            out = torch.zeros_like(scores)
            out[cand] = position_entropy(self.adapter.logits(h[cand]), self.settings, self.adapter.mask_token_id)
            return out

        return entropy

    def _logits(self, h: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def logits(where: torch.Tensor) -> torch.Tensor:
            z = self.adapter.logits(h[where]).float()
            z[:, self.adapter.mask_token_id] = -math.inf
            return z

        return logits

    def _fused_step(self, fused: FusedAdjustStep, h: torch.Tensor, x: torch.Tensor, candidates: torch.Tensor) -> None:
        """One base step through the static-shape loop; x is updated in place."""
        committed, logq = fused(h, x, candidates, self.base.window)  # [B, passes, R]
        self.sampler_passes += fused.num_passes - 1  # static shapes: every step runs all passes
        for k in range(fused.num_passes):
            pos = committed[:, k]
            if not bool((pos >= 0).any()):  # no row commits at pass k, nor later: number passes as the eager loop
                break
            rows, slots = (pos >= 0).nonzero(as_tuple=True)
            self.commit_pass[rows, pos[rows, slots]] = self.pass_counter
            if self.history is not None:
                self.history.append(fused_record(self.base_forwards - 1, k, pos, x, logq[:, k]))
            self.pass_counter += 1
