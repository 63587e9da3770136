"""adjust_loop: one base step's ADJUST passes as one static-shape callable (no host sync, graph-capturable).

After one base forward ``h0 = f(x)`` the reference engine (``adjust.generate``, ``per_pass`` loop) runs,
for k = 0 .. K−1: (k ≥ 1) ``h = g(h, x)``; sample a token and a score at every still-masked candidate
from ``W h``; commit the best-scoring candidate of each row that still has tokens to commit. Here the
same loop runs with

- the candidate set fixed once per base step: ``cand_idx`` [B, C] (ascending positions, −1 padding)
  and ``alive`` [B, C] (bool, cleared in place as candidates are committed);
- per-row pass counts ``n_passes`` [B]: row b commits at pass k iff k < n_passes[b] (the engine's
  ``n_row = min(remaining, K)``); the loop always runs ``num_passes`` passes, so shapes are static;
- logits only for the candidate rows (``lm_head_sample`` on the gathered ``[B·C, d]`` rows), the
  choice by a masked ``argmax`` on device, the commit by ``scatter_`` into ``x`` in place, and the
  random stream advanced on device (``seed_offset[1] += 1`` per pass);
- ``g`` from the fused pieces: ``sampler_input`` (gather + two RMSNorms + split DownProj),
  ``rmsnorm``, ``rope``, ``swiglu``, with the projections as cuBLAS GEMMs (``F.linear``) and attention
  as ``F.scaled_dot_product_attention`` (at these shapes both are at their floor already);
- the last pass (k = K−1) computes g only at the candidate rows, the only rows read after it
  (``_final_rows``): every row's input and keys/values, then only those rows' queries, attention
  output and MLP — g exactly there.

Nothing in a pass reads a device value on the host, so :meth:`AdjustLoop.capture` can record all
K passes in one CUDA graph. The pure-PyTorch twin (``backend="torch"``, :func:`adjust_passes_reference`)
runs the same loop with the reference pieces; its ``g`` is bit-identical to ``AdjustSampler.forward``.

With ``candidate_tokens=k'`` the passes k ≥ 1 are candidate-restricted (``adjust.candidates``): the
ids come from pass 0's logits (written by the same kernel call, then ``topk`` on device) and each pass
reads only N·k' rows of W instead of all V. With ``cache_context=True`` passes k ≥ 1 apply g to the C
candidate rows only, over keys/values of the other rows computed once per call from (x, h0)
(``adjust.context_cache``, where it is also written down why exact g has no reusable K/V). With
``sampler_cache=True`` (the base model block-cached) a block's full step records every pass's keys/values
and its later steps run every pass on the base's window only (``adjust.sampler_block_cache``); those
calls are not graph-captured (the window moves every block).

Differences from the engine, by design: no NaN/Inf check of the logits (it would sync); ``alg`` is
one of ``entropy, confidence, margin, low_confidence`` and ``alg_temp`` is not supported (use the torch
engine for ``random`` / ``alg_temp``); tokens at T > 0 come from the kernels' Philox stream, not from
``torch.multinomial`` (same distribution, different draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adjust_kernels._triton_utils import check_seed_offset
from adjust_kernels.kept_ids import keep_top_ids
from adjust_kernels.lm_head_sample import (
    SCORES,
    lm_head_sample,
    lm_head_sample_reference,
)
from adjust_kernels.rmsnorm import rmsnorm, rmsnorm_reference
from adjust_kernels.rope import rope, rope_reference
from adjust_kernels.rotary import position_ids_from_mask, rope_cos_sin
from adjust_kernels.sampler_input import sampler_input, sampler_input_reference
from adjust_kernels.swiglu import swiglu, swiglu_reference

__all__ = ["AdjustLoop", "adjust_passes", "adjust_passes_reference"]


@dataclass(frozen=True)
class _Pieces:
    """The ops one backend builds the loop from (same signatures in both backends)."""

    sampler_input: Callable[..., Tensor]
    rmsnorm: Callable[..., Tensor]
    rope: Callable[..., tuple[Tensor, Tensor]]
    swiglu: Callable[..., Tensor]
    lm_head_sample: Callable[..., tuple[Tensor, Tensor, Tensor]]


_BACKENDS = {
    "triton": _Pieces(sampler_input, rmsnorm, rope, swiglu, lm_head_sample),
    "torch": _Pieces(
        sampler_input_reference, rmsnorm_reference, rope_reference, swiglu_reference, lm_head_sample_reference
    ),
}


class AdjustLoop:
    """The ADJUST passes of one base step at fixed shapes, with preallocated outputs and an optional
    CUDA graph (see the module docstring for the semantics).

    Build one per generation (shapes, settings and the attention mask fixed), call it once per base
    step. Calls return the workspace tensors ``positions`` [B, K] (int64, −1 where row b committed
    nothing at pass k) and ``logprobs`` [B, K] (fp32 log q of the committed token, 0 where nothing was
    committed and at T = 0); the next call overwrites them.
    """

    def __init__(
        self,
        sampler: torch.nn.Module,
        embed_weight: Tensor,
        lm_head_weight: Tensor,
        lm_head_bias: Tensor | None = None,
        *,
        batch_size: int,
        seq_len: int,
        num_candidates: int,
        num_passes: int,
        temperature: float,
        alg: str = "entropy",
        mask_token_id: int,
        attention_mask: Tensor | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        candidate_tokens: int | None = None,
        cache_context: bool = False,
        sampler_cache: bool = False,
        backend: str = "triton",
    ):
        """
        Args:
            sampler: an ``adjust.AdjustSampler`` (its norm_e / norm_h / down_proj / layer / norm_out
                weights are read at every call, so later weight updates are seen).
            embed_weight: ``[V, d]`` base embedding E. lm_head_weight: ``[V, d]`` W; lm_head_bias ``[V]``.
            batch_size, seq_len, num_candidates: B, L and C of every call.
            num_passes: K, the passes per call: pass 0 scores ``W h0``, passes 1..K−1 apply g first.
            temperature, alg, top_p, top_k: token sampling and the position score (``adjust.unmasking``).
            mask_token_id: never sampled.
            attention_mask: ``[B, L]`` (1 = real token) for left-padded batches, or None.
            candidate_tokens: k', or None: candidate-restricted ADJUST (``adjust.candidates``). Pass 0
                also writes its logits to a workspace and keeps each row's k' best ids (``topk``);
                passes 1..K−1 read only those k' rows of W per candidate (``lm_head_sample(kept_ids=)``).
            cache_context: g updates only the candidate rows; the other rows keep h0 and their keys and
                values are computed once per call (``adjust.context_cache``: an approximation of g).
            sampler_cache: the base model runs block-cached (``generate(base_cache=...)``): a call with
                ``window=None`` (a block's full step) records every pass's keys/values of every row, a
                call with ``window=(start, end)`` runs every pass on those rows only over the recorded
                keys/values elsewhere (``adjust.sampler_block_cache``). Not with ``cache_context``.
            backend: ``"triton"`` (fused kernels) or ``"torch"`` (the reference pieces).
        """
        if backend not in _BACKENDS:
            raise ValueError(f"AdjustLoop: backend must be one of {tuple(_BACKENDS)}, got {backend!r}")
        if alg not in SCORES:
            raise ValueError(f"AdjustLoop: alg must be one of {SCORES}, got {alg!r} (random / alg_temp: use the torch engine)")
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len), ("num_candidates", num_candidates), ("num_passes", num_passes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"AdjustLoop: {name} must be an int >= 1, got {v!r}")
        if candidate_tokens is not None and (
            not isinstance(candidate_tokens, int) or isinstance(candidate_tokens, bool) or candidate_tokens < 1
        ):
            raise ValueError(f"AdjustLoop: candidate_tokens must be an int >= 1 or None, got {candidate_tokens!r}")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"AdjustLoop: temperature must be a finite number >= 0, got {temperature!r}")
        cfg = sampler.layer_config
        d, V = cfg.hidden_size, lm_head_weight.shape[0]
        if embed_weight.shape != (V, d) or lm_head_weight.shape != (V, d):
            raise ValueError(
                f"AdjustLoop: embed_weight and lm_head_weight must be [V, {d}], got "
                f"{tuple(embed_weight.shape)} and {tuple(lm_head_weight.shape)}"
            )
        if not 0 <= mask_token_id < V:
            raise ValueError(f"AdjustLoop: mask_token_id must be in [0, {V}), got {mask_token_id!r}")
        B, L = batch_size, seq_len
        self.device, self.dtype = lm_head_weight.device, lm_head_weight.dtype
        if attention_mask is not None and attention_mask.shape != (B, L):
            raise ValueError(f"AdjustLoop: attention_mask must be [B, L] = {(B, L)}, got {tuple(attention_mask.shape)}")
        self.sampler, self.embed_weight = sampler, embed_weight
        self.lm_head_weight, self.lm_head_bias = lm_head_weight, lm_head_bias
        self.shape = (B, L, num_candidates)
        self.num_passes = num_passes
        self.sampling = {
            "temperature": float(temperature), "alg": alg, "exclude_token": mask_token_id, "top_p": top_p, "top_k": top_k,
        }
        self.backend = backend
        self._p = _BACKENDS[backend]

        # Fixed for the whole generation: positions (RoPE tables), the key mask, the row base of the gather.
        if attention_mask is None:
            pos = torch.arange(L, device=self.device).expand(B, L)
            self._key_mask = None
        else:
            attention_mask = attention_mask.to(self.device)
            pos, self._key_mask = position_ids_from_mask(attention_mask), attention_mask.bool()
        self._cos, self._sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, self.dtype)
        # g's absolute-position term [B, L, d] (a sampler with ``positions``; None without): fixed like RoPE's tables
        term = getattr(sampler, "position_term", None)
        with torch.no_grad():
            self._pos_term = None if term is None else term(pos)
        self._row_base = torch.arange(B, device=self.device)[:, None] * L
        self.candidate_tokens = candidate_tokens
        self.cache_context = bool(cache_context)
        if sampler_cache and self.cache_context:
            raise ValueError("AdjustLoop: sampler_cache and cache_context are two rules for g's keys/values: pick one")
        # sampler_cache: passes 1..K−1's keys/values of every row, as of the block's full step
        kv_shape = (B, cfg.num_kv_heads, L, cfg.head_dim)
        self._record = [tuple(torch.zeros(kv_shape, dtype=self.dtype, device=self.device) for _ in range(2))
                        for _ in range(num_passes - 1)] if sampler_cache else None
        self._window: tuple[int, int] | None = None
        # pass 0's logits of the B·C candidate rows, from which the kept ids are chosen
        self._logits = None if candidate_tokens is None else torch.empty(
            (B * num_candidates, V), dtype=self.dtype, device=self.device)
        self.positions = torch.empty((B, num_passes), dtype=torch.int64, device=self.device)
        self.logprobs = torch.empty((B, num_passes), dtype=torch.float32, device=self.device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[Tensor, ...] | None = None

    # -- the sampler g ------------------------------------------------------------------------------

    @torch.no_grad()
    def sampler_step(self, h: Tensor, x: Tensor, record: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``g(h, x) = h + Norm_out(DecoderLayer(DownProj(concat(Norm_e(E x), Norm_h h))))`` [B, L, d];
        ``record``: buffers every row's keys/values are copied into (``sampler_cache``)."""
        return self._layer(h, self._input(h, x), self._cos, self._sin, record=record)

    def _input(self, h: Tensor, x: Tensor, rows: Tensor | slice | None = None) -> Tensor:
        """g's layer input u [B, R, d] of the rows h [B, R, d], x [B, R]: every row (``rows`` None), the
        positions ``rows`` [B, R] (gathered) or the window ``rows`` (a slice) — for the position term."""
        s = self.sampler
        u = self._p.sampler_input(x, h, self.embed_weight, s.norm_e.weight, s.norm_h.weight, s.down_proj.weight,
                                  s.layer_config.rms_norm_eps)
        if self._pos_term is None:
            return u
        if rows is None:
            return u + self._pos_term.to(u.dtype)
        if isinstance(rows, slice):
            return u + self._pos_term[:, rows].to(u.dtype)
        return u + self._pos_term.gather(1, rows[..., None].expand(-1, -1, u.shape[-1])).to(u.dtype)

    def _qkv(self, u: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated q [B, H, R, D], k and v [B, H_kv, R, D] of the layer inputs u [B, R, d]."""
        cfg, attn = self.sampler.layer_config, self.sampler.layer.self_attn
        B, R, _ = u.shape
        n = self._p.rmsnorm(u, self.sampler.layer.input_layernorm.weight, cfg.rms_norm_eps)
        q, k, v = ((F.linear(n, proj.weight, proj.bias).view(B, R, heads, cfg.head_dim).transpose(1, 2))
                   for proj, heads in ((attn.q_proj, cfg.num_heads), (attn.k_proj, cfg.num_kv_heads),
                                       (attn.v_proj, cfg.num_kv_heads)))
        q, k = self._p.rope(q, k, cos, sin)
        return q, k, v

    def _layer(self, h: Tensor, u: Tensor, cos: Tensor, sin: Tensor, context: tuple[Tensor, ...] | None = None,
               record: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``h + Norm_out(DecoderLayer(u))`` for the rows h, u [B, R, d] at the tables cos/sin [B, R, D]; with
        ``context`` = (k, v, slots, valid), the R rows are the slots' rows and their keys/values replace
        the context's at those slots (the candidate-only pass); ``record``: buffers the keys/values of
        these (all L) rows are copied into."""
        q, k, v = self._qkv(u, cos, sin)
        if record is not None:
            record[0].copy_(k)
            record[1].copy_(v)
        if context is not None:
            ck, cv, slots, valid = context
            at = slots[:, None, :, None].expand_as(k)
            keep = valid[:, None, :, None]
            k = ck.scatter(2, at, torch.where(keep, k, ck.gather(2, at)))
            v = cv.scatter(2, at, torch.where(keep, v, cv.gather(2, at)))
        return self._layer_out(h, u, q, k, v)

    def _layer_out(self, h: Tensor, u: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The layer after its projections: the R rows h, u [B, R, d] with queries q [B, H, R, D] over the
        keys/values k, v [B, H_kv, L, D]; ``h + Norm_out(u + Attn + MLP)`` [B, R, d]."""
        s, p, cfg = self.sampler, self._p, self.sampler.layer_config
        B, R, _ = h.shape
        H, KV, hd, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
        layer, attn, mlp = s.layer, s.layer.self_attn, s.layer.mlp
        if H != KV:
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        mask = None if self._key_mask is None else self._key_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        u = u + F.linear(o.transpose(1, 2).reshape(B, R, H * hd), attn.o_proj.weight)
        n = p.rmsnorm(u, layer.post_attention_layernorm.weight, eps)
        y = u + F.linear(p.swiglu(F.linear(n, mlp.gate_proj.weight), F.linear(n, mlp.up_proj.weight)), mlp.down_proj.weight)
        return p.rmsnorm(y, s.norm_out.weight, eps, residual=h)

    def _context(self, h0: Tensor, x: Tensor, cand_idx: Tensor) -> tuple[Tensor, ...]:
        """cache_context: the keys/values of every row from (x, h0), once per step, and the slots: the
        candidate positions first (ascending), then distinct context rows as padding (valid = False)."""
        B, L, C = self.shape
        real = (cand_idx >= 0).long()
        is_cand = torch.zeros((B, L), dtype=torch.long, device=x.device).scatter_add_(1, cand_idx.clamp(min=0), real) > 0
        slots = torch.sort((~is_cand).to(torch.int8), dim=1, stable=True).indices[:, :C]
        _, k, v = self._qkv(self._input(h0, x), self._cos, self._sin)
        at = slots[..., None].expand(-1, -1, self._cos.shape[-1])
        return k, v, slots, is_cand.gather(1, slots), self._cos.gather(1, at), self._sin.gather(1, at)

    def _context_step(self, h: Tensor, x: Tensor, ctx: tuple[Tensor, ...]) -> Tensor:
        """One candidate-only pass of g: the slots' rows updated, every other row of h kept."""
        k, v, slots, valid, cos, sin = ctx
        at = slots[..., None].expand(-1, -1, h.shape[-1])
        hc = h.gather(1, at)
        new = self._layer(hc, self._input(hc, x.gather(1, slots), slots), cos, sin, (k, v, slots, valid))
        return h.scatter(1, at, torch.where(valid[..., None], new, hc))

    def _final_rows(self, h: Tensor, x: Tensor, cand_idx: Tensor, record: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The last pass, exact g at the C candidate slots only (all that is read after it): [B·C, d]. Every
        row's input and projections, then only the slots' attention, o-projection and MLP (padding slots
        give row 0's value, never committed); ``record`` as in `_layer`."""
        B, _, C = self.shape
        u = self._input(h, x)
        q, k, v = self._qkv(u, self._cos, self._sin)
        if record is not None:
            record[0].copy_(k)
            record[1].copy_(v)
        slots = cand_idx.clamp(min=0)
        at = slots[..., None].expand(-1, -1, u.shape[-1])
        q = q.gather(2, slots[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
        return self._layer_out(h.gather(1, at), u.gather(1, at), q, k, v).reshape(B * C, -1)

    def _window_qkv(self, h: Tensor, x: Tensor, k: int) -> tuple[Tensor, ...]:
        """sampler_cache, a block's later step, pass k: the window rows' h and input, their queries, and
        pass k's recorded keys/values with the window's own written in (in place: the window is
        recomputed at every step, so what the record held there is never read again)."""
        start, end = self._window
        hw = h[:, start:end].contiguous()
        u = self._input(hw, x[:, start:end].contiguous(), slice(start, end))
        q, kw, vw = self._qkv(u, self._cos[:, start:end].contiguous(), self._sin[:, start:end].contiguous())
        rk, rv = self._record[k - 1]
        rk[:, :, start:end].copy_(kw)
        rv[:, :, start:end].copy_(vw)
        return hw, u, q, rk, rv

    def _window_step(self, h: Tensor, x: Tensor, k: int) -> Tensor:
        """sampler_cache, a later step: pass k of g on the window rows only; every other row of h kept."""
        start, end = self._window
        new = self._layer_out(*self._window_qkv(h, x, k))
        return torch.cat([h[:, :start], new, h[:, end:]], dim=1)

    def _window_final_rows(self, h: Tensor, x: Tensor, cand_idx: Tensor, k: int) -> Tensor:
        """sampler_cache, a later step's last pass: the window rows' keys/values, then only the C candidate
        slots' attention, o-projection and MLP: [B·C, d] (padding slots give the window's first row)."""
        B, _, C = self.shape
        hw, u, q, rk, rv = self._window_qkv(h, x, k)
        slots = (cand_idx - self._window[0]).clamp(min=0)
        at = slots[..., None].expand(-1, -1, u.shape[-1])
        q = q.gather(2, slots[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
        return self._layer_out(hw.gather(1, at), u.gather(1, at), q, rk, rv).reshape(B * C, -1)

    # -- the passes ---------------------------------------------------------------------------------

    def _passes(self, h0: Tensor, x: Tensor, cand_idx: Tensor, alive: Tensor, n_passes: Tensor, seed_offset: Tensor) -> None:
        """The loop body: device work only (graph-capturable); results in x, alive, seed_offset and
        the ``positions`` / ``logprobs`` workspaces."""
        B, L, C = self.shape
        rows = (self._row_base + cand_idx.clamp(min=0)).view(-1)
        self._begin(n_passes)
        h, kept, ctx = h0, None, None
        mask_id = self.sampling["exclude_token"]
        # the step's start, for the tokens g embeds (AdjustSampler.input_tokens); x is committed into in place
        x_base = x.clone() if self.sampler.inputs == "new" else x
        for k in range(self.num_passes):
            final = k > 0 and k == self.num_passes - 1 and not self.cache_context
            record = None if self._record is None or k == 0 else self._record[k - 1]
            windowed = record is not None and self._window is not None
            xg = x if k == 0 else self.sampler.input_tokens(x, x_base, mask_id)
            if k > 0 and self.cache_context:
                ctx = ctx or self._context(h0, xg, cand_idx)
                h = self._context_step(h, xg, ctx)
            elif k > 0 and not final:
                h = self._window_step(h, xg, k) if windowed else self.sampler_step(h, xg, record)
            if final:
                hc = (self._window_final_rows(h, xg, cand_idx, k) if windowed
                      else self._final_rows(h, xg, cand_idx, record))
            else:
                hc = h.reshape(B * L, -1).index_select(0, rows)
            if self._logits is None:
                vocab = {}
            elif k == 0:
                vocab = {"logits_out": self._logits}
            else:
                vocab = {"kept_ids": kept, "check_ids": False}
            tokens, scores, logq = self._p.lm_head_sample(hc, self.lm_head_weight, self.lm_head_bias, seed_offset,
                                                          **vocab, **self.sampling)
            if self._logits is not None and k == 0:  # the mask id's logit is -inf there: it is kept last
                kept = keep_top_ids(self._logits, self.candidate_tokens, None)
            self._commit(k, scores.view(B, C), tokens.view(B, C), logq.view(B, C), x, cand_idx, alive, n_passes)
            seed_offset[1:].add_(1)

    def _begin(self, n_passes: Tensor) -> None:
        """Per-call state of the commit rule, reset on device before pass 0 (none for ADJUST)."""

    def _commit(self, k: int, scores: Tensor, tokens: Tensor, logq: Tensor, x: Tensor, cand_idx: Tensor,
                alive: Tensor, n_passes: Tensor) -> None:
        """ADJUST's commit at pass k: each row's best-scoring alive candidate while k < n_passes[b] (in place)."""
        best = scores.masked_fill(~alive, float("-inf")).argmax(dim=1, keepdim=True)  # ties: lowest slot
        commit = alive.gather(1, best) & (n_passes[:, None] > k)
        pos = cand_idx.gather(1, best).clamp(min=0)
        x.scatter_(1, pos, torch.where(commit, tokens.gather(1, best), x.gather(1, pos)))
        alive.scatter_(1, best, alive.gather(1, best) & ~commit)
        self.positions[:, k : k + 1].copy_(torch.where(commit, pos, -1))
        self.logprobs[:, k : k + 1].copy_(torch.where(commit, logq.gather(1, best), 0.0))

    def _check(self, h0: Tensor, x: Tensor, cand_idx: Tensor, alive: Tensor, n_passes: Tensor, seed_offset: Tensor) -> None:
        B, L, C = self.shape
        d = self.sampler.layer_config.hidden_size
        expect = {
            "h0": (h0, (B, L, d), self.dtype),
            "x": (x, (B, L), torch.int64),
            "cand_idx": (cand_idx, (B, C), torch.int64),
            "alive": (alive, (B, C), torch.bool),
            "n_passes": (n_passes, (B,), torch.int64),
        }
        for name, (t, shape, dtype) in expect.items():
            if not isinstance(t, Tensor) or t.shape != shape or t.dtype != dtype or t.device != self.device:
                got = f"{t.dtype} {tuple(t.shape)} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"AdjustLoop: {name} must be {dtype} {shape} on {self.device}, got {got}")
        if not (x.is_contiguous() and alive.is_contiguous()):
            raise ValueError("AdjustLoop: x and alive are updated in place and must be contiguous")
        check_seed_offset("AdjustLoop", seed_offset, self.device)

    @torch.no_grad()
    def __call__(
        self, h0: Tensor, x: Tensor, cand_idx: Tensor, alive: Tensor, n_passes: Tensor, seed_offset: Tensor,
        window: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the K passes of one base step.

        Args:
            h0: ``[B, L, d]`` hidden states of the base forward (the adapter's ``hidden``).
            x: ``[B, L]`` int64 tokens; committed tokens are written into it in place.
            cand_idx: ``[B, C]`` int64 candidate positions, ascending per row (ties in score go to
                the lower position, as in the engine), −1 as padding.
            alive: ``[B, C]`` bool, true for real candidates; committed ones are cleared in place.
            n_passes: ``[B]`` int64, tokens row b commits in this step (``min(masked, K)``).
            seed_offset: int64 ``[2]`` = (seed, offset) on the device; offset advances by K in place.
            window: with ``sampler_cache``, the base forward's recomputed rows [start, end) at a block's
                later step (every candidate inside), or None at its full step (the passes are recorded).

        Returns:
            The workspaces ``(positions [B, K] int64, logprobs [B, K] fp32)`` (class docstring).
        """
        self._check(h0, x, cand_idx, alive, n_passes, seed_offset)
        if window is not None:
            if self._record is None:
                raise ValueError("AdjustLoop: a window needs sampler_cache=True")
            if not 0 <= window[0] < window[1] <= self.shape[1]:
                raise ValueError(f"AdjustLoop: window {window} is not inside [0, {self.shape[1]})")
        self._window = window
        if self._graph is None:
            self._passes(h0, x, cand_idx, alive, n_passes, seed_offset)
        else:
            for static, given in zip(self._static, (h0, x, cand_idx, alive, n_passes, seed_offset)):
                static.copy_(given)
            self._graph.replay()
            _, sx, _, salive, _, sseed = self._static
            x.copy_(sx)
            alive.copy_(salive)
            seed_offset.copy_(sseed)
        return self.positions, self.logprobs

    @torch.no_grad()
    def capture(self) -> bool:
        """Record the K passes in a CUDA graph over static input buffers; later calls replay it
        (copying the arguments in and the in-place results back). Returns False, doing nothing,
        off CUDA. The first eager pass on a side stream compiles the kernels before capture."""
        if self.device.type != "cuda" or self._record is not None:  # sampler_cache: windows move every block
            return False
        B, L, C = self.shape
        d = self.sampler.layer_config.hidden_size
        static = (
            torch.zeros((B, L, d), dtype=self.dtype, device=self.device),
            torch.zeros((B, L), dtype=torch.int64, device=self.device),
            torch.full((B, C), -1, dtype=torch.int64, device=self.device),
            torch.zeros((B, C), dtype=torch.bool, device=self.device),
            torch.zeros((B,), dtype=torch.int64, device=self.device),
            torch.zeros((2,), dtype=torch.int64, device=self.device),
        )
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._passes(*static)  # warm-up: Triton compilation, cuBLAS handles
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._passes(*static)
        self._graph, self._static = graph, static
        return True


def adjust_passes(
    h0: Tensor,
    x: Tensor,
    cand_idx: Tensor,
    alive: Tensor,
    n_passes: Tensor,
    sampler: torch.nn.Module,
    embed_weight: Tensor,
    lm_head_weight: Tensor,
    lm_head_bias: Tensor | None,
    seed_offset: Tensor,
    *,
    num_passes: int,
    temperature: float,
    alg: str = "entropy",
    mask_token_id: int,
    attention_mask: Tensor | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    candidate_tokens: int | None = None,
    cache_context: bool = False,
) -> tuple[Tensor, Tensor]:
    """One base step's K = ``num_passes`` ADJUST passes with the fused Triton kernels, eagerly.

    Arguments as :class:`AdjustLoop` and its ``__call__``; ``x``, ``alive`` and ``seed_offset`` are
    updated in place. Returns ``(positions [B, K], logprobs [B, K])``. For many base steps at fixed
    shapes, build an :class:`AdjustLoop` once instead (and ``capture()`` it on CUDA).
    """
    return _run("triton", h0, x, cand_idx, alive, n_passes, sampler, embed_weight, lm_head_weight, lm_head_bias,
                seed_offset, num_passes, temperature, alg, mask_token_id, attention_mask, top_p, top_k,
                candidate_tokens, cache_context)


def adjust_passes_reference(
    h0: Tensor,
    x: Tensor,
    cand_idx: Tensor,
    alive: Tensor,
    n_passes: Tensor,
    sampler: torch.nn.Module,
    embed_weight: Tensor,
    lm_head_weight: Tensor,
    lm_head_bias: Tensor | None,
    seed_offset: Tensor,
    *,
    num_passes: int,
    temperature: float,
    alg: str = "entropy",
    mask_token_id: int,
    attention_mask: Tensor | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    candidate_tokens: int | None = None,
    cache_context: bool = False,
) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch twin of :func:`adjust_passes`: the same loop built from the reference pieces
    (same Philox stream, so the same tokens at any temperature up to fp32 rounding)."""
    return _run("torch", h0, x, cand_idx, alive, n_passes, sampler, embed_weight, lm_head_weight, lm_head_bias,
                seed_offset, num_passes, temperature, alg, mask_token_id, attention_mask, top_p, top_k,
                candidate_tokens, cache_context)


def _run(
    backend: str, h0: Tensor, x: Tensor, cand_idx: Tensor, alive: Tensor, n_passes: Tensor, sampler: torch.nn.Module,
    embed_weight: Tensor, lm_head_weight: Tensor, lm_head_bias: Tensor | None, seed_offset: Tensor, num_passes: int,
    temperature: float, alg: str, mask_token_id: int, attention_mask: Tensor | None, top_p: float | None,
    top_k: int | None, candidate_tokens: int | None, cache_context: bool,
) -> tuple[Tensor, Tensor]:
    """A one-off AdjustLoop of ``backend`` for these shapes, run eagerly."""
    if h0.dim() != 3 or cand_idx.dim() != 2:
        raise ValueError(f"adjust_passes: h0 must be [B, L, d] and cand_idx [B, C], got {tuple(h0.shape)} and {tuple(cand_idx.shape)}")
    (B, L, _), C = h0.shape, cand_idx.shape[1]
    loop = AdjustLoop(
        sampler, embed_weight, lm_head_weight, lm_head_bias, batch_size=B, seq_len=L, num_candidates=C,
        num_passes=num_passes, temperature=temperature, alg=alg, mask_token_id=mask_token_id,
        attention_mask=attention_mask, top_p=top_p, top_k=top_k, candidate_tokens=candidate_tokens,
        cache_context=cache_context, backend=backend,
    )
    return loop(h0, x, cand_idx, alive, n_passes, seed_offset)
