"""lm_head_sample: the LM head fused with token sampling and the unmasking score, logits never stored.

For N candidate rows ``h`` [N, d] and the LM head ``W`` [V, d] (+ bias), per row: logits
``x = h Wᵀ + b``, then Dream's ``sample_tokens`` semantics (``adjust.unmasking``): the excluded token
(the mask id) gets probability 0, ``z = x / T`` (``z = x`` at T = 0), the token is argmax z at T = 0
(lowest index on ties) and a draw from softmax(z) at T > 0, and the row's score is one of

- ``entropy``        Σ p log p                      (higher = more certain)
- ``confidence``     p[token]
- ``margin``         top-1 p − top-2 p
- ``low_confidence`` softmax(x)[token], the *untempered* probability (LLaDA)

with p = softmax(z). It also returns log q(token) under softmax(z) (0 at T = 0, as the engine does).

How (two kernels):

1. ``_partials_kernel``, grid (row blocks, vocab splits): each program streams its slice of the
   vocabulary in ``BLOCK_V`` tiles, computing the ``[BLOCK_N, BLOCK_V]`` logits tile with ``tl.dot``
   over d, and folds it into an online per-row state: running max m, S = Σ e^{z−m},
   A = Σ e^{z−m}·(z−m) (kept relative to m: no cancellation; entropy = A/S − log S), top-1 index and
   top-2 value of z (margin), the Gumbel-max running best (z + G, token, z and x at it) for sampling,
   and for ``low_confidence`` at T > 0 the logsumexp of the untempered x. The state goes to a small
   ``[fields, N, splits]`` buffer. W is read once per row block (once per call when N ≤ BLOCK_N);
   row blocks are the fastest grid axis, so the programs sharing a W tile run together and later
   row blocks find it in L2.
2. ``_finalize_kernel`` merges the splits of each row in a fixed order (deterministic: no atomics) and
   writes token (int64), score and log q (fp32).

Randomness: G = −log(−log u) with u from Philox4x32-10 keyed by ``seed`` and counters
(token, row, offset low, offset high), ``(seed, offset) = seed_offset``, an int64 device tensor the
kernel reads itself, so a captured CUDA graph samples afresh whenever the tensor is advanced on device.
A draw depends only on (seed, offset, row, token): not on tiling, splits or GPU, and
:func:`lm_head_sample_reference` reproduces it bit for bit (``_triton_utils.gumbel_noise``). A tile
whose best z + 17 (a bound on G) cannot beat the row's best key skips drawing: same result, less work.

Logits are rounded to W's dtype before use, as ``F.linear`` would return them, so T = 0 ties resolve as
in the PyTorch engine. ``top_p`` / ``top_k`` need a sort of each row and cannot stream: when set, the
op falls back to the reference (logits for the N rows materialised in fp32). On a GPU the plan is a
second, cheap pass on the selected row(s) only (see docs/kernels_triton.md).

Candidate-restricted passes (``adjust.candidates``): with ``kept_ids`` [N, k] (ascending ids per row)
row n's vocabulary is kept_ids[n] only. The same two kernels run with ``KEPT``: a tile gathers
``[BLOCK_N, BLOCK_V, BLOCK_D]`` rows of W (rows share no W tile, so a batched GEMV with ``tl.sum``, not
``tl.dot``), and the noise counters use the kept token's id, so a kept token draws the noise it draws
unrestricted. ``logits_out`` makes kernel 1 also store the logits it computed (W's dtype): the
restricted ``AdjustLoop`` picks the kept ids from pass 0's logits with ``topk``.

Floor per call: bytes = V·d·sizeof (W, read once) + N·d·sizeof + V·sizeof (bias); FLOPs = 2·N·V·d.
With kept ids: bytes = N·k·d·sizeof (gathered rows) + N·d·sizeof + N·k·8 (ids); FLOPs = 2·N·k·d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from adjust.candidates import kept_linear
from adjust.unmasking import SamplingSettings, filter_logits
from adjust_kernels._triton_utils import (
    GUMBEL_MAX,
    check_float,
    check_runnable,
    check_seed_offset,
    dot_upcast,
    gumbel_noise,
    interpreting,
)

__all__ = ["SCORES", "lm_head_sample", "lm_head_sample_reference"]

SCORES = ("entropy", "confidence", "margin", "low_confidence")

# The partials buffers hold, per (row, split), fp32 fields [m, S, A, top2, key, z_tok, x_tok, m_raw,
# S_raw] and int32 fields [top1, token], laid out [field, row, split].
_NF, _NI = 9, 2


@triton.jit
def _token_at(vid, lanes, i, v0, KEPT: tl.constexpr):
    """The token id at tile column i[n] of each row: v0 + i, or vid[n, i[n]] for a per-row vocabulary."""
    if KEPT:
        return tl.sum(tl.where(lanes[None, :] == i[:, None], vid, 0), axis=1).to(tl.int32)
    return (v0 + i).to(tl.int32)


@triton.jit
def _partials_kernel(
    h_ptr, w_ptr, b_ptr, ids_ptr, so_ptr, pf_ptr, pi_ptr, lo_ptr,
    N, V, D, stride_h, stride_w, stride_ids, v_per_split, n_splits, temperature, exclude,
    HAS_BIAS: tl.constexpr, KEPT: tl.constexpr, STORE: tl.constexpr, SAMPLE: tl.constexpr, RAW: tl.constexpr,
    UPCAST: tl.constexpr, GMAX: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # KEPT: row n's vocabulary is ids[n, :V] (ascending token ids) instead of 0..V-1; column j of a tile
    # is then token vid[n, j], and W's rows are gathered per row (a batched GEMV, no shared W tile).
    split = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    v_lo = split * v_per_split
    v_hi = tl.minimum(v_lo + v_per_split, V)
    dt = w_ptr.dtype.element_ty
    lanes = tl.arange(0, BLOCK_V)
    ninf = float("-inf")

    m = tl.full((BLOCK_N,), ninf, tl.float32)
    s = tl.zeros((BLOCK_N,), tl.float32)
    a = tl.zeros((BLOCK_N,), tl.float32)
    top2 = tl.full((BLOCK_N,), ninf, tl.float32)
    top1 = tl.full((BLOCK_N,), -1, tl.int32)
    key = tl.full((BLOCK_N,), ninf, tl.float32)
    tok = tl.full((BLOCK_N,), -1, tl.int32)
    ztok = tl.full((BLOCK_N,), ninf, tl.float32)
    xtok = tl.full((BLOCK_N,), ninf, tl.float32)
    mr = tl.full((BLOCK_N,), ninf, tl.float32)
    sr = tl.zeros((BLOCK_N,), tl.float32)
    if SAMPLE:
        seed = tl.load(so_ptr)
        offset = tl.load(so_ptr + 1)
        off_lo = (offset & 0xFFFFFFFF).to(tl.uint32)
        off_hi = ((offset >> 32) & 0xFFFFFFFF).to(tl.uint32)

    h_rows = h_ptr + rows[:, None].to(tl.int64) * stride_h
    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = v0 + lanes
        col_ok = cols < v_hi
        tile_ok = row_ok[:, None] & col_ok[None, :]
        if KEPT:
            vid = tl.load(ids_ptr + rows[:, None].to(tl.int64) * stride_ids + cols[None, :], mask=tile_ok, other=0)
        else:
            vid = cols[None, :]
        acc = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ks = d0 + tl.arange(0, BLOCK_D)
            hv = tl.load(h_rows + ks[None, :], mask=row_ok[:, None] & (ks < D)[None, :], other=0.0)
            if KEPT:  # [rows, columns, d-slice] of W rows gathered per row
                wv = tl.load(w_ptr + vid.to(tl.int64)[:, :, None] * stride_w + ks[None, None, :],
                             mask=tile_ok[:, :, None] & (ks < D)[None, None, :], other=0.0)
                acc += tl.sum(wv.to(tl.float32) * hv.to(tl.float32)[:, None, :], axis=2)
            else:
                wv = tl.load(w_ptr + cols[None, :].to(tl.int64) * stride_w + ks[:, None],
                             mask=(ks < D)[:, None] & col_ok[None, :], other=0.0)
                if UPCAST:
                    hv = hv.to(tl.float32)
                    wv = wv.to(tl.float32)
                acc = tl.dot(hv, wv, acc, input_precision="ieee")
        if HAS_BIAS and KEPT:
            acc += tl.load(b_ptr + vid, mask=tile_ok, other=0.0).to(tl.float32)
        elif HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        valid = tile_ok & (vid != exclude)
        x = tl.where(valid, acc.to(dt).to(tl.float32), ninf)  # the logits F.linear would return
        if STORE:  # the logits themselves, for a caller that needs more than one sample (top-k' ids)
            tl.store(lo_ptr + rows[:, None].to(tl.int64) * V + cols[None, :], x.to(dt), mask=tile_ok)
        if SAMPLE:
            z = tl.div_rn(x, temperature)
        else:
            z = x
        live = z > ninf

        # Online softmax statistics; A stays relative to the running max (no cancellation).
        # (ref_m: the max, or 0 while a row is empty, so that no -inf - -inf NaN is ever formed.)
        tile_m = tl.max(z, axis=1)
        new_m = tl.maximum(m, tile_m)
        ref_m = tl.where(new_m > ninf, new_m, 0.0)
        d_old = tl.where(s > 0, m - ref_m, 0.0)
        r_old = tl.exp(d_old)
        a = r_old * (a + d_old * s)
        s = r_old * s
        dz = tl.where(live, z - ref_m[:, None], 0.0)
        e = tl.where(live, tl.exp(dz), 0.0)
        s += tl.sum(e, axis=1)
        a += tl.sum(e * dz, axis=1)

        # Top-1 (first index on ties) and top-2 value: the tile's, merged with the running pair.
        i1 = tl.argmax(z, axis=1)
        tile_top2 = tl.max(tl.where(lanes[None, :] == i1[:, None], ninf, z), axis=1)
        top2 = tl.maximum(tl.minimum(m, tile_m), tl.maximum(top2, tile_top2))
        top1 = tl.where(tile_m > m, _token_at(vid, lanes, i1, v0, KEPT), top1)
        m = new_m

        if RAW:  # logsumexp of the untempered logits (low_confidence at T > 0)
            new_mr = tl.maximum(mr, tl.max(x, axis=1))
            ref_mr = tl.where(new_mr > ninf, new_mr, 0.0)
            sr = tl.where(sr > 0, sr * tl.exp(mr - ref_mr), 0.0)
            sr += tl.sum(tl.where(live, tl.exp(x - ref_mr[:, None]), 0.0), axis=1)
            mr = new_mr

        if SAMPLE:
            # Gumbel-max; only tiles that can beat a row's best key draw noise (G < GMAX).
            need = (tile_m > ninf) & (tile_m + GMAX >= key)
            if tl.sum(need.to(tl.int32)) > 0:
                # Counters (token, row, offset lo, offset hi): a draw depends on nothing else.
                zero = tl.zeros((BLOCK_N, BLOCK_V), tl.uint32)
                bits, _, _, _ = tl.philox(
                    seed, zero + vid.to(tl.uint32), zero + rows[:, None].to(tl.uint32),
                    zero + off_lo, zero + off_hi,
                )
                u = ((bits >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07  # (k + 1/2)·2^-23
                k = z - tl.log(-tl.log(u))
                ki = tl.argmax(k, axis=1)
                kbest = tl.max(k, axis=1)
                at = lanes[None, :] == ki[:, None]
                better = kbest > key  # strict: earlier (lower) tokens win ties
                key = tl.where(better, kbest, key)
                tok = tl.where(better, _token_at(vid, lanes, ki, v0, KEPT), tok)
                ztok = tl.where(better, tl.max(tl.where(at, z, ninf), axis=1), ztok)
                xtok = tl.where(better, tl.max(tl.where(at, x, ninf), axis=1), xtok)

    # Field f of (row, split) lives at pf[f, row, split].
    out = pf_ptr + rows.to(tl.int64) * n_splits + split
    stride_f = N * n_splits
    tl.store(out + 0 * stride_f, m, mask=row_ok)
    tl.store(out + 1 * stride_f, s, mask=row_ok)
    tl.store(out + 2 * stride_f, a, mask=row_ok)
    tl.store(out + 3 * stride_f, top2, mask=row_ok)
    tl.store(out + 4 * stride_f, key, mask=row_ok)
    tl.store(out + 5 * stride_f, ztok, mask=row_ok)
    tl.store(out + 6 * stride_f, xtok, mask=row_ok)
    tl.store(out + 7 * stride_f, mr, mask=row_ok)
    tl.store(out + 8 * stride_f, sr, mask=row_ok)
    out_i = pi_ptr + rows.to(tl.int64) * n_splits + split
    tl.store(out_i, top1, mask=row_ok)
    tl.store(out_i + stride_f, tok, mask=row_ok)


@triton.jit
def _pick(values, at):
    """values[row, j*] for the one-hot mask ``at`` [rows, splits] (j* per row)."""
    return tl.sum(tl.where(at, values, 0), axis=1)


@triton.jit
def _finalize_kernel(
    pf_ptr, pi_ptr, tok_ptr, score_ptr, logq_ptr, N, n_splits,
    ALG: tl.constexpr, SAMPLE: tl.constexpr, RAW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    js = tl.arange(0, BLOCK_S)
    row_ok = rows < N
    mask = row_ok[:, None] & (js < n_splits)[None, :]
    ninf = float("-inf")
    idx = rows[:, None].to(tl.int64) * n_splits + js[None, :]
    stride_f = N * n_splits
    m = tl.load(pf_ptr + 0 * stride_f + idx, mask=mask, other=ninf)
    s = tl.load(pf_ptr + 1 * stride_f + idx, mask=mask, other=0.0)
    a = tl.load(pf_ptr + 2 * stride_f + idx, mask=mask, other=0.0)
    top2 = tl.load(pf_ptr + 3 * stride_f + idx, mask=mask, other=ninf)
    top1 = tl.load(pi_ptr + idx, mask=mask, other=-1)

    # Merge the splits; every reduction below has a fixed shape and order: deterministic.
    big_m = tl.max(m, axis=1)
    has = s > 0
    d = tl.where(has, m - tl.where(big_m > ninf, big_m, 0.0)[:, None], 0.0)
    r = tl.where(has, tl.exp(d), 0.0)
    big_s = tl.sum(r * s, axis=1)
    big_a = tl.sum(r * (a + d * s), axis=1)
    empty = big_s == 0  # no token with a finite logit: (-1, NaN); keep NaN/inf out of the math below
    big_s = tl.where(empty, 1.0, big_s)
    big_m = tl.where(empty, 0.0, big_m)
    j1 = tl.argmax(m, axis=1)  # first split on ties = lowest token: splits are ascending ranges
    at1 = js[None, :] == j1[:, None]
    second = tl.maximum(tl.max(tl.where(at1, ninf, m), axis=1), tl.max(top2, axis=1))
    log_s = tl.log(big_s)
    if SAMPLE:
        key = tl.load(pf_ptr + 4 * stride_f + idx, mask=mask, other=ninf)
        jk = tl.argmax(key, axis=1)
        atk = js[None, :] == jk[:, None]
        token = _pick(tl.load(pi_ptr + stride_f + idx, mask=mask, other=-1), atk)
        z_tok = tl.max(tl.where(atk, tl.load(pf_ptr + 5 * stride_f + idx, mask=mask, other=ninf), ninf), axis=1)
        logq = z_tok - big_m - log_s
    else:
        token = _pick(top1, at1)
        z_tok = big_m
        logq = tl.zeros((BLOCK_N,), tl.float32)
    p_tok = tl.exp(z_tok - big_m) / big_s
    if ALG == 0:  # entropy: Σ p log p = A/S − log S
        score = big_a / big_s - log_s
    elif ALG == 1:  # confidence
        score = p_tok
    elif ALG == 2:  # margin: (e^0 − e^{top2 − m}) / S
        score = (1.0 - tl.exp(second - big_m)) / big_s
    else:  # low_confidence: the untempered softmax at the token (= p_tok at T = 0)
        if RAW:
            mr = tl.load(pf_ptr + 7 * stride_f + idx, mask=mask, other=ninf)
            sr = tl.load(pf_ptr + 8 * stride_f + idx, mask=mask, other=0.0)
            big_mr = tl.where(empty, 0.0, tl.max(mr, axis=1))
            big_sr = tl.where(empty, 1.0, tl.sum(tl.where(sr > 0, sr * tl.exp(mr - big_mr[:, None]), 0.0), axis=1))
            x_tok = tl.max(tl.where(atk, tl.load(pf_ptr + 6 * stride_f + idx, mask=mask, other=ninf), ninf), axis=1)
            score = tl.exp(x_tok - big_mr) / big_sr
        else:
            score = p_tok
    nan = float("nan")
    tl.store(tok_ptr + rows, tl.where(empty, -1, token).to(tl.int64), mask=row_ok)
    tl.store(score_ptr + rows, tl.where(empty, nan, score), mask=row_ok)
    tl.store(logq_ptr + rows, tl.where(empty, nan, logq), mask=row_ok)


def _check(
    h: Tensor, weight: Tensor, bias: Tensor | None, seed_offset: Tensor, temperature: float, alg: str,
    exclude_token: int, top_p: float | None, top_k: int | None, kept_ids: Tensor | None, logits_out: Tensor | None,
    check_ids: bool,
) -> int:
    """Validates the arguments; returns the size of each row's vocabulary (V, or the kept count)."""
    op = "lm_head_sample"
    check_float(op, "h", h)
    check_float(op, "weight", weight, h.dtype)
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: h must be [N, d] and weight [V, d], got {tuple(h.shape)} and {tuple(weight.shape)}")
    V = weight.shape[0]
    if bias is not None:
        check_float(op, "bias", bias, h.dtype)
        if bias.shape != (V,):
            raise ValueError(f"{op}: bias must be [{V}], got {tuple(bias.shape)}")
    check_seed_offset(op, seed_offset, h.device)
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"{op}: temperature must be a finite number >= 0, got {temperature!r}")
    if alg not in SCORES:
        raise ValueError(f"{op}: alg must be one of {SCORES}, got {alg!r} (random / alg_temp: use the torch engine)")
    if not isinstance(exclude_token, int) or not -1 <= exclude_token < V:
        raise ValueError(f"{op}: exclude_token must be -1 or a token id in [0, {V}), got {exclude_token!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"{op}: top_p must be in (0, 1] or None, got {top_p!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"{op}: top_k must be an int >= 1 or None, got {top_k!r}")
    n_cols = V
    if kept_ids is not None:
        if not isinstance(kept_ids, Tensor) or kept_ids.dtype != torch.int64 or kept_ids.dim() != 2 \
                or kept_ids.shape[0] != h.shape[0] or kept_ids.shape[1] < 1 or kept_ids.device != h.device:
            got = f"{kept_ids.dtype} {tuple(kept_ids.shape)} on {kept_ids.device}" if isinstance(kept_ids, Tensor) else type(kept_ids).__name__
            raise ValueError(f"{op}: kept_ids must be int64 [N={h.shape[0]}, k >= 1] on {h.device}, got {got}")
        n_cols = kept_ids.shape[1]
        # Out-of-range ids would read outside W; repeated ones would count a token twice. (Checking syncs
        # the host: callers that make the ids themselves, sorted and in range, pass check_ids=False.)
        if check_ids and kept_ids.numel() and not bool(
            ((kept_ids[:, 0] >= 0).all() & (kept_ids[:, -1] < V).all() & (kept_ids[:, 1:] > kept_ids[:, :-1]).all())
        ):
            raise ValueError(f"{op}: each row of kept_ids must hold strictly ascending token ids in [0, {V})")
    if logits_out is not None and (
        not isinstance(logits_out, Tensor) or logits_out.dtype != weight.dtype
        or logits_out.shape != (h.shape[0], n_cols) or logits_out.device != h.device or not logits_out.is_contiguous()
    ):
        got = f"{logits_out.dtype} {tuple(logits_out.shape)}" if isinstance(logits_out, Tensor) else type(logits_out).__name__
        raise ValueError(f"{op}: logits_out must be a contiguous {weight.dtype} [{h.shape[0]}, {n_cols}] tensor, got {got}")
    return n_cols


def lm_head_sample(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    seed_offset: Tensor,
    *,
    temperature: float,
    alg: str = "entropy",
    exclude_token: int = -1,
    top_p: float | None = None,
    top_k: int | None = None,
    num_splits: int | None = None,
    kept_ids: Tensor | None = None,
    logits_out: Tensor | None = None,
    check_ids: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample (T > 0) or argmax (T = 0) a token per row of ``h @ weight.T + bias`` and score the row.

    Args:
        h: ``[N, d]`` hidden states of the candidate positions (float32/float16/bfloat16).
        weight: ``[V, d]`` LM head, h's dtype. bias: ``[V]`` or None.
        seed_offset: int64 ``[2]`` = (seed, offset) on h's device, read by the kernel (graph-safe);
            equal values give equal draws. The op does not advance it.
        temperature: >= 0; 0 is greedy.
        alg: the score, one of ``SCORES``.
        exclude_token: a token id never chosen, with probability 0 (the mask id), or -1.
        top_p, top_k: Dream's filters; when they filter anything the op runs the reference instead.
        num_splits: vocabulary splits per row block (None: enough programs to fill the device);
            results do not depend on it beyond fp32 rounding of the scores.
        kept_ids: int64 ``[N, k]``, strictly ascending token ids per row: row n's distribution and score
            are over those tokens only (softmax renormalised over them; candidate-restricted ADJUST,
            ``adjust.candidates``). Only those k rows of W are read per row. A kept token draws the same
            Gumbel noise as without ``kept_ids``, so keeping every id gives the unrestricted result.
        logits_out: a contiguous ``[N, V]`` (or ``[N, k]``) tensor of W's dtype that receives the logits
            the kernel computed (the excluded token's at -inf), e.g. to choose the kept ids of later passes.
        check_ids: check ``kept_ids`` (one host sync); pass False for ids made sorted and in range.

    Returns:
        ``(tokens int64 [N], scores fp32 [N], logprobs fp32 [N])``, the contract of
        ``adjust.unmasking.sample_tokens``; a row without any finite logit gives (-1, NaN, NaN).
    """
    n_cols = _check(h, weight, bias, seed_offset, temperature, alg, exclude_token, top_p, top_k, kept_ids, logits_out,
                    check_ids)
    check_runnable("lm_head_sample", *(t for t in (h, weight, bias, seed_offset, kept_ids, logits_out) if t is not None))
    if (top_p is not None and top_p < 1) or (top_k is not None and top_k < n_cols):
        return lm_head_sample_reference(
            h, weight, bias, seed_offset, temperature=temperature, alg=alg, exclude_token=exclude_token,
            top_p=top_p, top_k=top_k, kept_ids=kept_ids, logits_out=logits_out, check_ids=False,
        )
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        raise ValueError(f"lm_head_sample: num_splits must be an int >= 1 or None, got {num_splits!r}")
    N, D = h.shape
    dev = h.device
    tokens = torch.empty(N, dtype=torch.int64, device=dev)
    scores = torch.empty(N, dtype=torch.float32, device=dev)
    logq = torch.empty(N, dtype=torch.float32, device=dev)
    if N == 0:
        return tokens, scores, logq
    if h.stride(-1) != 1:
        h = h.contiguous()
    if weight.stride(-1) != 1:
        weight = weight.contiguous()
    kept = kept_ids is not None
    if kept and kept_ids.stride(-1) != 1:
        kept_ids = kept_ids.contiguous()

    # The interpreter runs programs one by one and each op is a numpy call: fewer, bigger blocks there.
    # With kept ids a tile is [rows, columns, d-slice] of gathered W rows: smaller blocks keep it in registers.
    if kept:
        block_n = min(128 if interpreting() else 2, triton.next_power_of_2(N))
        block_v = min(32, max(16, triton.next_power_of_2(n_cols)))
        block_d = min(32 if interpreting() else 128, max(16, triton.next_power_of_2(D)))
    else:
        block_n = min(256 if interpreting() else 64, max(16, triton.next_power_of_2(N)))
        block_v = min(128, max(16, triton.next_power_of_2(n_cols)))
        block_d = min(64, max(16, triton.next_power_of_2(D)))
    row_blocks = triton.cdiv(N, block_n)
    if num_splits is None:
        # Enough programs to fill the GPU a few times over; the interpreter runs them one by one.
        target = 4 if interpreting() or dev.type != "cuda" else 4 * torch.cuda.get_device_properties(dev).multi_processor_count
        num_splits = max(1, triton.cdiv(target, row_blocks))
    v_per_split = triton.cdiv(triton.cdiv(n_cols, min(num_splits, triton.cdiv(n_cols, block_v))), block_v) * block_v
    n_splits = triton.cdiv(n_cols, v_per_split)

    pf = torch.empty((_NF, N, n_splits), dtype=torch.float32, device=dev)
    pi = torch.empty((_NI, N, n_splits), dtype=torch.int32, device=dev)
    sample = temperature > 0
    raw = sample and alg == "low_confidence"
    _partials_kernel[(row_blocks, n_splits)](
        h, weight, bias if bias is not None else h, kept_ids if kept else pi, seed_offset, pf, pi,
        logits_out if logits_out is not None else pf,
        N, n_cols, D, h.stride(0), weight.stride(0), kept_ids.stride(0) if kept else 0, v_per_split, n_splits,
        float(temperature), exclude_token,
        HAS_BIAS=bias is not None, KEPT=kept, STORE=logits_out is not None, SAMPLE=sample, RAW=raw,
        UPCAST=dot_upcast(h.dtype), GMAX=GUMBEL_MAX, BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d,
    )
    fin_n = min(64, triton.next_power_of_2(N))
    _finalize_kernel[(triton.cdiv(N, fin_n),)](
        pf, pi, tokens, scores, logq, N, n_splits,
        ALG=SCORES.index(alg), SAMPLE=sample, RAW=raw, BLOCK_N=fin_n, BLOCK_S=triton.next_power_of_2(n_splits),
    )
    return tokens, scores, logq


def lm_head_sample_reference(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    seed_offset: Tensor,
    *,
    temperature: float,
    alg: str = "entropy",
    exclude_token: int = -1,
    top_p: float | None = None,
    top_k: int | None = None,
    num_splits: int | None = None,
    kept_ids: Tensor | None = None,
    logits_out: Tensor | None = None,
    check_ids: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch twin of :func:`lm_head_sample`: materialises the logits (``F.linear`` in h's dtype,
    or ``adjust.candidates.kept_linear`` with ``kept_ids``, then fp32, as the engine does), filters them with
    ``adjust.unmasking.filter_logits`` and samples argmax(z + G) with the kernel's Philox noise G, so it
    draws the same tokens. ``num_splits`` is accepted for signature parity and ignored."""
    _check(h, weight, bias, seed_offset, temperature, alg, exclude_token, top_p, top_k, kept_ids, logits_out, check_ids)
    if kept_ids is None:
        logits = F.linear(h, weight, bias)
        mask_id = exclude_token if exclude_token >= 0 else None
    else:
        logits = kept_linear(h, weight, bias, kept_ids)
        if exclude_token >= 0:
            logits = logits.masked_fill(kept_ids == exclude_token, float("-inf"))
        mask_id = None
    if logits_out is not None:
        logits_out.copy_(logits if mask_id is None else logits.index_fill(1, torch.tensor([mask_id], device=h.device), float("-inf")))
    z = filter_logits(logits, SamplingSettings(temperature, top_p, top_k, alg), mask_id)
    probs = torch.softmax(z, dim=-1)
    N, V = z.shape
    if temperature > 0:
        tokens = (z + gumbel_noise(seed_offset, N, V, z.device, kept_ids)).argmax(dim=-1)
        logq = torch.log_softmax(z, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    else:
        tokens = z.argmax(dim=-1)
        logq = torch.zeros(N, dtype=torch.float32, device=z.device)
    if alg == "entropy":
        scores = torch.special.xlogy(probs, probs).sum(-1)
    elif alg == "confidence":
        scores = probs.gather(-1, tokens[:, None]).squeeze(-1)
    elif alg == "margin":
        top = torch.nn.functional.pad(probs, (0, 1)).topk(2, dim=-1).values  # the 0 column covers V == 1
        scores = top[:, 0] - top[:, 1]
    else:
        raw = logits.float()
        if mask_id is not None:
            raw[:, mask_id] = float("-inf")
        scores = torch.softmax(raw, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    if kept_ids is not None:
        tokens = kept_ids.gather(1, tokens[:, None]).squeeze(1)
    return tokens, scores, logq
