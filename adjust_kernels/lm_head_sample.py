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
2. ``_finalize_kernel`` merges the splits of each row in a fixed order (deterministic: no atomics),
   ``BLOCK_S`` splits at a time (registers bounded at any split count), and writes token (int64),
   score and log q (fp32).

The launch configuration is the pure function :func:`lm_head_sample_config`; :func:`compile_specs`
lists the launches at the ahead-of-time problems (``python -m adjust_kernels.aot``).

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from adjust_kernels._triton_utils import (
    GUMBEL_MAX,
    check_float,
    check_runnable,
    check_seed_offset,
    dot_upcast,
    gumbel_noise,
    interpreting,
    multiprocessor_count,
)
from adjust_kernels.aot_shapes import AotProblem
from adjust_kernels.kept_ids import kept_linear
from adjust_kernels.launch import CompileSpec, Launch, LaunchConfig, meta_tensor
from adjust_kernels.sampling_settings import SamplingSettings, filter_logits

__all__ = ["SCORES", "LmHeadPlan", "compile_specs", "lm_head_sample", "lm_head_sample_config", "lm_head_sample_reference"]

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
def _empty_state(BLOCK_N: tl.constexpr):
    """The online state of BLOCK_N rows that have seen no token: (m, S, A, top-2 value, top-1 token, Gumbel
    key, sampled token, its z, its x, untempered max, untempered S)."""
    ninf = float("-inf")
    neg_inf, minus_one = tl.full((BLOCK_N,), ninf, tl.float32), tl.full((BLOCK_N,), -1, tl.int32)
    zero = tl.zeros((BLOCK_N,), tl.float32)
    return neg_inf, zero, zero, neg_inf, minus_one, neg_inf, minus_one, neg_inf, neg_inf, neg_inf, zero


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

    m, s, a, top2, top1, key, tok, ztok, xtok, mr, sr = _empty_state(BLOCK_N)
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
    row_ok = rows < N
    lanes = tl.arange(0, BLOCK_S)
    ninf = float("-inf")
    base = rows[:, None].to(tl.int64) * n_splits
    stride_f = N * n_splits

    # The splits' states merged BLOCK_S at a time, in ascending split order: a fixed order whatever the
    # GPU (deterministic, no atomics), and registers bounded by a [BLOCK_N, BLOCK_S] chunk at any V.
    # ref: the running max, or 0 while a row is empty, so that no -inf - -inf NaN is ever formed.
    m, s, a, second, top1, key, token, z_tok, x_tok, mr, sr = _empty_state(BLOCK_N)
    for j0 in range(0, n_splits, BLOCK_S):
        mask = row_ok[:, None] & (j0 + lanes < n_splits)[None, :]
        idx = base + j0 + lanes[None, :]
        cm = tl.load(pf_ptr + 0 * stride_f + idx, mask=mask, other=ninf)
        cs = tl.load(pf_ptr + 1 * stride_f + idx, mask=mask, other=0.0)
        ca = tl.load(pf_ptr + 2 * stride_f + idx, mask=mask, other=0.0)
        chunk_m = tl.max(cm, axis=1)
        new_m = tl.maximum(m, chunk_m)
        ref = tl.where(new_m > ninf, new_m, 0.0)
        d_old = tl.where(s > 0, m - ref, 0.0)
        r_old = tl.exp(d_old)
        has = cs > 0
        d = tl.where(has, cm - ref[:, None], 0.0)
        r = tl.where(has, tl.exp(d), 0.0)
        a = r_old * (a + d_old * s) + tl.sum(r * (ca + d * cs), axis=1)
        s = r_old * s + tl.sum(r * cs, axis=1)
        # Top-1 (first split on ties = lowest token: splits are ascending ranges) and the second value.
        at1 = lanes[None, :] == tl.argmax(cm, axis=1)[:, None]
        chunk_second = tl.maximum(tl.max(tl.where(at1, ninf, cm), axis=1),
                                  tl.max(tl.load(pf_ptr + 3 * stride_f + idx, mask=mask, other=ninf), axis=1))
        second = tl.maximum(tl.minimum(m, chunk_m), tl.maximum(second, chunk_second))
        top1 = tl.where(chunk_m > m, _pick(tl.load(pi_ptr + idx, mask=mask, other=-1), at1), top1)
        m = new_m
        if SAMPLE:
            ck = tl.load(pf_ptr + 4 * stride_f + idx, mask=mask, other=ninf)
            atk = lanes[None, :] == tl.argmax(ck, axis=1)[:, None]
            chunk_key = tl.max(ck, axis=1)
            better = chunk_key > key  # strict: earlier splits (lower tokens) win ties
            key = tl.where(better, chunk_key, key)
            token = tl.where(better, _pick(tl.load(pi_ptr + stride_f + idx, mask=mask, other=-1), atk), token)
            z_c = tl.load(pf_ptr + 5 * stride_f + idx, mask=mask, other=ninf)
            z_tok = tl.where(better, tl.max(tl.where(atk, z_c, ninf), axis=1), z_tok)
            if RAW:  # logsumexp of the untempered logits, and the untempered logit of the token
                x_c = tl.load(pf_ptr + 6 * stride_f + idx, mask=mask, other=ninf)
                x_tok = tl.where(better, tl.max(tl.where(atk, x_c, ninf), axis=1), x_tok)
                cmr = tl.load(pf_ptr + 7 * stride_f + idx, mask=mask, other=ninf)
                csr = tl.load(pf_ptr + 8 * stride_f + idx, mask=mask, other=0.0)
                new_mr = tl.maximum(mr, tl.max(cmr, axis=1))
                ref_r = tl.where(new_mr > ninf, new_mr, 0.0)
                sr = tl.where(sr > 0, sr * tl.exp(mr - ref_r), 0.0) \
                    + tl.sum(tl.where(csr > 0, csr * tl.exp(cmr - ref_r[:, None]), 0.0), axis=1)
                mr = new_mr

    empty = s == 0  # no token with a finite logit: (-1, NaN); keep NaN/inf out of the math below
    big_s = tl.where(empty, 1.0, s)
    big_m = tl.where(empty, 0.0, m)
    log_s = tl.log(big_s)
    if SAMPLE:
        logq = z_tok - big_m - log_s
    else:
        token = top1
        z_tok = big_m
        logq = tl.zeros((BLOCK_N,), tl.float32)
    p_tok = tl.div_rn(tl.exp(z_tok - big_m), big_s)
    if ALG == 0:  # entropy: Σ p log p = A/S − log S
        score = tl.div_rn(a, big_s) - log_s
    elif ALG == 1:  # confidence
        score = p_tok
    elif ALG == 2:  # margin: (e^0 − e^{top2 − m}) / S
        score = tl.div_rn(1.0 - tl.exp(second - big_m), big_s)
    else:  # low_confidence: the untempered softmax at the token (= p_tok at T = 0)
        if RAW:
            score = tl.div_rn(tl.exp(x_tok - tl.where(empty, 0.0, mr)), tl.where(empty, 1.0, sr))
        else:
            score = p_tok
    nan = float("nan")
    tl.store(tok_ptr + rows, tl.where(empty, -1, token).to(tl.int64), mask=row_ok)
    tl.store(score_ptr + rows, tl.where(empty, nan, score), mask=row_ok)
    tl.store(logq_ptr + rows, tl.where(empty, nan, logq), mask=row_ok)


@dataclass(frozen=True)
class LmHeadPlan:
    """The launches of one call: the partials kernel over (row blocks, vocabulary splits), then the
    finalize kernel over row blocks, and the split of each row's vocabulary they share."""

    partials: LaunchConfig
    finalize: LaunchConfig
    v_per_split: int  # columns of a row's vocabulary per split (a multiple of BLOCK_V)
    n_splits: int


def lm_head_sample_config(
    n_rows: int, n_cols: int, d: int, dtype: torch.dtype, *, alg: str, temperature: float, kept: bool, store: bool,
    has_bias: bool, sm_count: int, interpreting: bool, num_splits: int | None = None,
) -> LmHeadPlan:
    """How ``lm_head_sample`` launches for ``n_rows`` candidate rows over ``n_cols`` vocabulary columns
    (V, or the kept count with ``kept``) of width ``d`` on a GPU with ``sm_count`` SMs.

    Vocabulary splits: ``num_splits`` per row block, or by default enough programs for 4 per SM (4 in all
    when interpreting: the interpreter runs programs one by one, and each op is a numpy call, so it also
    gets fewer, bigger blocks). Block sizes and warps are the largest that compile without spills for
    sm_90 and sm_80 (``python -m adjust_kernels.aot``, docs/kernels_triton.md): with kept ids a tile is
    [rows, columns, d-slice] of gathered W rows, so blocks are small; over the full vocabulary the
    [BLOCK_N, BLOCK_V] logits tile and its online state take 8 warps, and at T > 0 the Philox state
    halves BLOCK_V; fp32 ``tl.dot`` runs on FMA units, which hold both operands in registers: smaller
    tiles. The finalize kernel merges the splits in chunks of BLOCK_S (2 when interpreting, so that the
    tests' few splits take several chunks).
    """
    sample = temperature > 0
    wide = dtype != torch.float32
    if interpreting:
        block_n = min(128 if kept else 256, max(1 if kept else 16, triton.next_power_of_2(n_rows)))
        block_v = min(32 if kept else 128, max(16, triton.next_power_of_2(n_cols)))
        block_d = min(32 if kept else 64, max(16, triton.next_power_of_2(d)))
    elif kept:
        block_n = min(2, triton.next_power_of_2(n_rows))
        block_v = min(32, max(16, triton.next_power_of_2(n_cols)))
        block_d = min(128 if wide else 32, max(16, triton.next_power_of_2(d)))
    else:
        block_n = min(64 if wide else 32, max(16, triton.next_power_of_2(n_rows)))
        block_v = min(64 if sample or not wide else 128, max(16, triton.next_power_of_2(n_cols)))
        block_d = min(64 if wide else 32, max(16, triton.next_power_of_2(d)))
    row_blocks = triton.cdiv(n_rows, block_n)
    if num_splits is None:
        num_splits = max(1, triton.cdiv(4 if interpreting else 4 * sm_count, row_blocks))
    v_per_split = triton.cdiv(triton.cdiv(n_cols, min(num_splits, triton.cdiv(n_cols, block_v))), block_v) * block_v
    n_splits = triton.cdiv(n_cols, v_per_split)
    raw = sample and alg == "low_confidence"
    partials = LaunchConfig(
        grid=(row_blocks, n_splits),
        constexprs={"HAS_BIAS": has_bias, "KEPT": kept, "STORE": store, "SAMPLE": sample, "RAW": raw,
                    "UPCAST": dot_upcast(dtype, interpreting), "GMAX": GUMBEL_MAX,
                    "BLOCK_N": block_n, "BLOCK_V": block_v, "BLOCK_D": block_d},
        num_warps=4 if kept or interpreting else 8,
    )
    fin_n = min(64 if interpreting else 16, triton.next_power_of_2(n_rows))
    finalize = LaunchConfig(
        grid=(triton.cdiv(n_rows, fin_n),),
        constexprs={"ALG": SCORES.index(alg), "SAMPLE": sample, "RAW": raw, "BLOCK_N": fin_n,
                    "BLOCK_S": min(2 if interpreting else 32, triton.next_power_of_2(n_splits))},
    )
    return LmHeadPlan(partials, finalize, v_per_split, n_splits)


def _launches(
    h: Tensor, weight: Tensor, bias: Tensor | None, seed_offset: Tensor, kept_ids: Tensor | None,
    logits_out: Tensor | None, *, temperature: float, alg: str, exclude_token: int, num_splits: int | None,
    sm_count: int,
) -> tuple[list[Launch], tuple[Tensor, Tensor, Tensor]]:
    """The two kernel calls for checked, unit-strided arguments, and the outputs they write."""
    (N, D), dev = h.shape, h.device
    kept = kept_ids is not None
    n_cols = kept_ids.shape[1] if kept else weight.shape[0]
    plan = lm_head_sample_config(N, n_cols, D, h.dtype, alg=alg, temperature=temperature, kept=kept,
                                 store=logits_out is not None, has_bias=bias is not None, sm_count=sm_count,
                                 interpreting=interpreting(), num_splits=num_splits)
    pf = torch.empty((_NF, N, plan.n_splits), dtype=torch.float32, device=dev)
    pi = torch.empty((_NI, N, plan.n_splits), dtype=torch.int32, device=dev)
    outputs = (torch.empty(N, dtype=torch.int64, device=dev), torch.empty(N, dtype=torch.float32, device=dev),
               torch.empty(N, dtype=torch.float32, device=dev))
    partials = Launch(_partials_kernel, plan.partials, (
        h, weight, bias if bias is not None else h, kept_ids if kept else pi, seed_offset, pf, pi,
        logits_out if logits_out is not None else pf,
        N, n_cols, D, h.stride(0), weight.stride(0), kept_ids.stride(0) if kept else 0, plan.v_per_split,
        plan.n_splits, float(temperature), exclude_token,
    ))
    finalize = Launch(_finalize_kernel, plan.finalize, (pf, pi, *outputs, N, plan.n_splits))
    return [partials, finalize], outputs


def compile_specs(problem: AotProblem, sm_count: int) -> list[CompileSpec]:
    """Every launch of an ADJUST pass's LM head at ``problem``: T = 0 and T > 0, each score, over the full
    vocabulary, the full vocabulary with ``logits_out`` (pass 0 of candidate-restricted passes) and the
    kept ids (passes k >= 1), with the LM-head bias of the model (none for Dream and LLaDA)."""
    m, dt, N = problem.model, problem.dtype, problem.candidate_rows
    h, w = meta_tensor((N, m.hidden_size), dt), meta_tensor((m.vocab_size, m.hidden_size), dt)
    so = meta_tensor((2,), torch.int64)
    modes = {
        "full": {},
        "logits_out": {"logits_out": meta_tensor((N, m.vocab_size), dt)},
        "kept": {"kept_ids": meta_tensor((N, problem.kept_tokens), torch.int64)},
    }
    specs = []
    for mode, extra in modes.items():
        for temperature in (0.0, 1.0):
            for alg in SCORES:
                launches, _ = _launches(h, w, None, so, extra.get("kept_ids"), extra.get("logits_out"),
                                        temperature=temperature, alg=alg, exclude_token=m.vocab_size - 1,
                                        num_splits=None, sm_count=sm_count)
                t = "T>0" if temperature > 0 else "T=0"
                raw = " raw" if temperature > 0 and alg == "low_confidence" else ""
                specs.append(CompileSpec(problem, f"{mode} {t}{raw}", launches[0]))
                specs.append(CompileSpec(problem, f"{mode} {t} {alg}", launches[1]))
    return specs


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
    dev = h.device
    if h.shape[0] == 0:
        return (torch.empty(0, dtype=torch.int64, device=dev), torch.empty(0, device=dev), torch.empty(0, device=dev))
    if h.stride(-1) != 1:
        h = h.contiguous()
    if weight.stride(-1) != 1:
        weight = weight.contiguous()
    if kept_ids is not None and kept_ids.stride(-1) != 1:
        kept_ids = kept_ids.contiguous()
    sm_count = multiprocessor_count(dev) if dev.type == "cuda" else 1
    launches, outputs = _launches(h, weight, bias, seed_offset, kept_ids, logits_out, temperature=temperature, alg=alg,
                                  exclude_token=exclude_token, num_splits=num_splits, sm_count=sm_count)
    for launch in launches:
        launch()
    return outputs


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
    or ``adjust_kernels.kept_ids.kept_linear`` with ``kept_ids``, then fp32, as the engine does), filters them with
    ``adjust_kernels.sampling_settings.filter_logits`` and samples argmax(z + G) with the kernel's Philox noise G, so it
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
