"""Floors: the least time an op can take on a machine, from the bytes it must move and the FLOPs it must do.

A unit's floor is ``max(bytes / bandwidth, FLOPs / matmul rate)`` (a roofline with the two ceilings
measured in the same run, see ``ceilings.py``). Units that run one after the other (the passes of an
ADJUST step, the steps of a generation) add their floors. Bytes count each weight once, the
activations a fused kernel must read and write, and nothing that a fused kernel keeps on chip;
FLOPs count the GEMMs (2 per multiply-add) and attention (4·B·L²·H·D per layer), not elementwise work.

    python -m benchmarks.floors            # the Dream-7B / LLaDA-8B tables of docs/performance.md (and the block cache's)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.shapes import SHAPES, ModelShape

# Nominal H100 SXM ceilings, only for the printed planning tables (runs use measured ceilings).
H100_BANDWIDTH = 3.35e12  # bytes/s, HBM3
H100_BF16_RATE = 989e12  # dense bf16 FLOP/s


@dataclass(frozen=True)
class Cost:
    """Bytes moved and FLOPs done by one unit of work."""

    bytes: float
    flops: float

    def seconds(self, bandwidth: float, flop_rate: float) -> float:
        return max(self.bytes / bandwidth, self.flops / flop_rate)

    def bound(self, bandwidth: float, flop_rate: float) -> str:
        return "memory" if self.bytes / bandwidth >= self.flops / flop_rate else "compute"


def floor_seconds(costs: Iterable[Cost], bandwidth: float, flop_rate: float) -> float:
    """Floor of units run one after another: the sum of their floors."""
    return sum(c.seconds(bandwidth, flop_rate) for c in costs)


def total(costs: Iterable[Cost]) -> Cost:
    costs = list(costs)
    return Cost(sum(c.bytes for c in costs), sum(c.flops for c in costs))


# -- one unit each -----------------------------------------------------------------------------------


def attention_flops(s: ModelShape, B: int, L: int) -> float:
    """QKᵀ and PV of one bidirectional layer over B sequences of L tokens."""
    return 4.0 * B * L * L * s.num_heads * s.head_dim


def lm_head_cost(s: ModelShape, rows: int, elt: int) -> Cost:
    """``lm_head_sample`` on ``rows`` candidate rows: W [V, d] read once, the rows read; no [rows, V] logits."""
    return Cost(s.vocab_size * s.hidden_size * elt + rows * s.hidden_size * elt + rows * 16,
                2.0 * rows * s.vocab_size * s.hidden_size)


def restricted_lm_head_cost(s: ModelShape, rows: int, tokens: int, elt: int) -> Cost:
    """A candidate-restricted pass (``lm_head_sample(kept_ids=)``): logits only at ``tokens`` kept ids per
    row, so ``rows · tokens`` rows of W gathered (no reuse across rows assumed), the ids read."""
    return Cost(rows * tokens * s.hidden_size * elt + rows * s.hidden_size * elt + rows * tokens * 8,
                2.0 * rows * tokens * s.hidden_size)


def kept_ids_cost(s: ModelShape, rows: int, tokens: int, elt: int) -> Cost:
    """What pass 0 adds in the restricted mode: its [rows, V] logits written (``logits_out``) and read
    back by ``topk``, the [rows, tokens] ids written."""
    return Cost(2 * rows * s.vocab_size * elt + rows * tokens * 8, 0.0)


def method_options(method: str) -> dict:
    """``generate`` options of a benchmark method: ``adjust-top64`` keeps 64 ids per position
    (``candidate_tokens``), ``adjust-ctx`` caches the context (``cache_context``); exact methods: none."""
    if method.startswith("adjust-top"):
        return {"candidate_tokens": int(method.removeprefix("adjust-top"))}
    return {"cache_context": True} if method == "adjust-ctx" else {}


def context_kv_cost(s: ModelShape, B: int, L: int, elt: int) -> Cost:
    """``cache_context``, once per base step: DownProj, Norm and the K/V projections of all B·L rows
    (their weights read, E rows + h read, K/V written)."""
    M, d, kv = B * L, s.hidden_size, s.num_kv_heads * s.head_dim
    return Cost((2 * d * d + 2 * d * kv) * elt + (2 * M * d + 2 * M * kv) * elt + 8 * M,
                2.0 * M * (2 * d * d + 2 * d * kv))


def context_step_cost(s: ModelShape, B: int, L: int, C: int, elt: int) -> Cost:
    """One candidate-only pass of g (``cache_context``): all sampler weights once, the C candidate rows
    through every GEMM, their C queries over L cached keys/values."""
    M, kv = B * C, s.num_kv_heads * s.head_dim
    return Cost(s.sampler_params * elt + 3 * M * s.hidden_size * elt + 2 * B * L * kv * elt + 8 * M,
                2.0 * M * s.sampler_linear_params + 4.0 * B * C * L * s.num_heads * s.head_dim)


def final_pass_cost(s: ModelShape, B: int, L: int, C: int, elt: int) -> Cost:
    """Exact ADJUST's last sampler pass of a base step, read only at its C candidate rows
    (``AdjustLoop._final_rows``): all sampler weights once, every row's input, DownProj and q/k/v
    projections, then only the C rows' attention (C queries over L keys), o-projection and MLP."""
    M, Mc, d = B * L, B * C, s.hidden_size
    projections = 2 * d * d + d * (s.num_heads + 2 * s.num_kv_heads) * s.head_dim
    return Cost(s.sampler_params * elt + (2 * M + Mc) * d * elt + 8 * M,
                2.0 * M * projections + 2.0 * Mc * (s.sampler_linear_params - projections)
                + 4.0 * B * C * L * s.num_heads * s.head_dim)


def window_pass_cost(s: ModelShape, B: int, L: int, W: int, elt: int, C: int | None = None) -> Cost:
    """A sampler pass at a block's later step under ``base_cache`` (`adjust.sampler_block_cache`): all
    sampler weights once, the W window rows through every GEMM (E rows + h read, h' written), W queries
    over L keys, the pass's recorded K/V of L positions read and the window's written. ``C``: the step's
    last pass, whose W rows are projected (DownProj, q/k/v) but only its C candidate rows run further."""
    kv = s.num_kv_heads * s.head_dim
    if C is None:
        M = B * W
        return Cost(s.sampler_params * elt + 3 * M * s.hidden_size * elt + 2 * B * (L + W) * kv * elt + 8 * M,
                    2.0 * M * s.sampler_linear_params + 4.0 * B * W * L * s.num_heads * s.head_dim)
    M, Mc, d = B * W, B * C, s.hidden_size
    projections = 2 * d * d + d * (s.num_heads + 2 * s.num_kv_heads) * s.head_dim
    return Cost(s.sampler_params * elt + (2 * M + Mc) * d * elt + 2 * B * (L + W) * kv * elt + 8 * M,
                2.0 * M * projections + 2.0 * Mc * (s.sampler_linear_params - projections)
                + 4.0 * B * C * L * s.num_heads * s.head_dim)


def sampler_input_cost(s: ModelShape, M: int, elt: int) -> Cost:
    """``sampler_input`` over M = B·L rows: E rows + h read, Wd [d, 2d] read, u written."""
    d = s.hidden_size
    return Cost((3 * M * d + 2 * d * d) * elt + 8 * M, 4.0 * M * d * d)


def sampler_step_cost(s: ModelShape, B: int, L: int, elt: int) -> Cost:
    """One application of g over B·L rows: all sampler weights once, E rows + h read, h' written."""
    M = B * L
    return Cost(s.sampler_params * elt + 3 * M * s.hidden_size * elt + 8 * M,
                2.0 * M * s.sampler_linear_params + attention_flops(s, B, L))


def base_forward_cost(s: ModelShape, B: int, L: int, elt: int) -> Cost:
    """``adapter.hidden``: all layer weights once, embedding rows read, final hidden states written
    (the engine applies the LM head only at candidate rows, counted separately)."""
    M = B * L
    return Cost((s.num_layers * s.layer_params + s.hidden_size) * elt + 2 * M * s.hidden_size * elt + 8 * M,
                s.num_layers * (2.0 * M * s.layer_linear_params + attention_flops(s, B, L)))


# -- sequences of units ------------------------------------------------------------------------------


def adjust_loop_costs(s: ModelShape, B: int, L: int, C: int, K: int, elt: int,
                      candidate_tokens: int | None = None, cache_context: bool = False) -> list[Cost]:
    """``AdjustLoop`` (static shapes, B·C candidate rows): K LM-head passes over the same rows, K−1
    applications of g (the last one candidate-only, `final_pass_cost`); with ``candidate_tokens`` pass 0
    also keeps ids and passes k ≥ 1 are restricted to them; with ``cache_context`` the context's K/V
    once and every g over the C rows only."""
    rows = B * C
    head = lm_head_cost(s, rows, elt) if candidate_tokens is None else restricted_lm_head_cost(
        s, rows, candidate_tokens, elt)
    first = [lm_head_cost(s, rows, elt)]
    if candidate_tokens is not None:
        first.append(kept_ids_cost(s, rows, candidate_tokens, elt))
    if cache_context:
        first.append(context_kv_cost(s, B, L, elt))
        return first + [context_step_cost(s, B, L, C, elt), head] * (K - 1)
    if K == 1:
        return first
    return first + [sampler_step_cost(s, B, L, elt), head] * (K - 2) + [final_pass_cost(s, B, L, C, elt), head]


def kv_bytes(s: ModelShape, B: int, rows: int, elt: int) -> float:
    """Keys and values of ``rows`` positions in every layer (after RoPE, before the GQA repeat)."""
    return 2.0 * s.num_layers * B * rows * s.num_kv_heads * s.head_dim * elt


def window_forward_cost(s: ModelShape, B: int, L: int, W: int, elt: int) -> Cost:
    """A block-cached base forward (``generate(base_cache=...)``) over a window of W rows of L: all layer
    weights once, the window's rows through every GEMM, W queries over L keys, every layer's cached K/V
    read and the window's written, the window's hidden states written."""
    M = B * W
    return Cost((s.num_layers * s.layer_params + s.hidden_size) * elt + 2 * M * s.hidden_size * elt + 8 * M
                + kv_bytes(s, B, L, elt) + kv_bytes(s, B, W, elt),
                s.num_layers * (2.0 * M * s.layer_linear_params + 4.0 * B * W * L * s.num_heads * s.head_dim))


def step_costs(s: ModelShape, B: int, L: int, remaining: int, K: int, method: str, elt: int,
               base: Cost | None = None, window: int | None = None) -> list[Cost]:
    """One base step of the engine with ``remaining`` masked tokens per row.

    ``parallel`` (and K = 1): base forward + one LM-head pass over the B·remaining rows.
    ``adjust``: base forward + n = min(remaining, K) LM-head passes over the rows still masked, n−1 g's
    (the last candidate-only, `final_pass_cost`).
    ``adjust-top<k>`` (candidate-restricted): pass 0 also keeps k ids per row; passes k ≥ 1 read only those.
    ``adjust-ctx`` (context-cached): the context's K/V once, then g over the ``remaining`` candidate rows.
    ``base``: the base forward's cost (default: a full forward over all L rows).
    ``window``: a block-cached later step's W window rows: every g but the context-cached one runs on
    them, the last one at its candidates past the projections (`window_pass_cost`).
    """
    costs = [base_forward_cost(s, B, L, elt) if base is None else base]
    n = min(remaining, K)
    if method in ("k1", "parallel"):
        return costs + [lm_head_cost(s, B * remaining, elt)]
    opts = method_options(method)
    kept = opts.get("candidate_tokens")
    costs.append(lm_head_cost(s, B * remaining, elt))
    if kept is not None and n > 1:
        costs.append(kept_ids_cost(s, B * remaining, kept, elt))
    if opts.get("cache_context") and n > 1:
        costs.append(context_kv_cost(s, B, L, elt))
    for k in range(1, n):
        rows = B * (remaining - k)
        head = lm_head_cost(s, rows, elt) if kept is None else restricted_lm_head_cost(s, rows, kept, elt)
        if opts.get("cache_context"):
            g = context_step_cost(s, B, L, remaining, elt)
        elif window is not None:
            g = window_pass_cost(s, B, L, window, elt, remaining - k if k == n - 1 else None)
        else:
            g = final_pass_cost(s, B, L, remaining - k, elt) if k == n - 1 else sampler_step_cost(s, B, L, elt)
        costs += [g, head]
    return costs


def generation_costs(s: ModelShape, B: int, prompt: int, new: int, K: int, method: str, elt: int) -> list[Cost]:
    """Every unit of an unblocked generation of ``new`` tokens per row after a ``prompt``-token prompt."""
    L = max(prompt, 1) + new  # prompt_len 0 means a BOS token
    K = 1 if method == "k1" else K
    costs: list[Cost] = []
    remaining = new
    while remaining > 0:
        costs += step_costs(s, B, L, remaining, K, method, elt)
        remaining -= min(remaining, K)
    return costs


def block_generation_costs(s: ModelShape, B: int, prompt: int, new: int, block: int, K: int, method: str, elt: int,
                           base_cache: str | None = None) -> list[Cost]:
    """Every unit of a semi-AR generation of ``new`` tokens in blocks of ``block`` (candidates: the block's
    masks). With ``base_cache`` each block's first forward is full (and writes every layer's K/V), the
    others run over the window: the block and all after it (``"prefix"``) or the block alone (``"dual"``),
    and so do their sampler passes (`window_pass_cost`)."""
    P = max(prompt, 1)
    L = P + new
    K = 1 if method == "k1" else K
    costs: list[Cost] = []
    for start in range(P, L, block):
        remaining, first = block, True
        while remaining > 0:
            window = None
            if base_cache is None:
                base = None
            elif first:
                full = base_forward_cost(s, B, L, elt)
                base = Cost(full.bytes + kv_bytes(s, B, L, elt), full.flops)
            else:
                window = L - start if base_cache == "prefix" else block
                base = window_forward_cost(s, B, L, window, elt)
            costs += step_costs(s, B, L, remaining, K, method, elt, base, window)
            remaining -= min(remaining, K)
            first = False
    return costs


def step_ratio(s: ModelShape, B: int, L: int, rows: int, K: int, elt: int, bandwidth: float, flop_rate: float,
               restricted_tokens: int | None = None, cache_context: bool = False) -> float:
    """Exact-semantics ceiling of ADJUST / parallel tokens/s for one base step (both commit K tokens):
    (T_f + T_W(rows)) / (T_f + K·T_W(rows) + T_g's), all at their floors, where the K−1 g's are K−2
    full passes and the candidate-only last one (`_passes_seconds`). With ``restricted_tokens`` the
    passes k ≥ 1 read only that many LM-head rows per candidate and pass 0 pays for choosing them;
    with ``cache_context`` g runs over the rows/B candidates only, after the context's K/V once."""
    f = base_forward_cost(s, B, L, elt).seconds(bandwidth, flop_rate)
    w = lm_head_cost(s, rows, elt).seconds(bandwidth, flop_rate)
    if cache_context:
        g = context_step_cost(s, B, L, rows // B, elt).seconds(bandwidth, flop_rate)
        once = context_kv_cost(s, B, L, elt).seconds(bandwidth, flop_rate)
        return (f + w) / (f + w + once + (K - 1) * (w + g))
    g = _passes_seconds(s, B, L, rows, K, elt, bandwidth, flop_rate)
    if restricted_tokens is None:
        return (f + w) / (f + w + (K - 1) * w + g)
    keep = kept_ids_cost(s, rows, restricted_tokens, elt).seconds(bandwidth, flop_rate)
    later = restricted_lm_head_cost(s, rows, restricted_tokens, elt).seconds(bandwidth, flop_rate)
    return (f + w) / (f + w + keep + (K - 1) * later + g)


def _passes_seconds(s: ModelShape, B: int, L: int, rows: int, K: int, elt: int, bandwidth: float,
                    flop_rate: float) -> float:
    """Floor of exact ADJUST's K−1 applications of g in one base step: K−2 full, the last candidate-only."""
    if K < 2:
        return 0.0
    full = sampler_step_cost(s, B, L, elt).seconds(bandwidth, flop_rate)
    return (K - 2) * full + final_pass_cost(s, B, L, rows // B, elt).seconds(bandwidth, flop_rate)


def base_slack_needed(s: ModelShape, B: int, L: int, rows: int, K: int, target: float, elt: int, bandwidth: float,
                      flop_rate: float) -> float:
    """How many times its floor the base forward must take, with every pass at its floor, for
    ADJUST/parallel to reach ``target``: f' ≥ ((target·K − 1)·T_W + target·T_g's) / (1 − target)
    (T_g's: `_passes_seconds`). Both methods pay f', so this is slack in the base model's
    implementation, not in ADJUST's."""
    f = base_forward_cost(s, B, L, elt).seconds(bandwidth, flop_rate)
    w = lm_head_cost(s, rows, elt).seconds(bandwidth, flop_rate)
    g = _passes_seconds(s, B, L, rows, K, elt, bandwidth, flop_rate)
    return ((target * K - 1) * w + target * g) / (1 - target) / f


# -- planning tables ---------------------------------------------------------------------------------


def _ms(c: Cost, bw: float, rate: float) -> str:
    return f"{c.seconds(bw, rate) * 1e3:.3f} ({c.bound(bw, rate)[:3]})"


def planning_tables(bw: float = H100_BANDWIDTH, rate: float = H100_BF16_RATE, elt: int = 2) -> str:
    """Markdown: per-unit floors and ADJUST/parallel ceilings for the 7B/8B shapes at these ceilings."""
    out = [(f"Ceilings: {bw / 1e12:.2f} TB/s, {rate / 1e12:.0f} TFLOP/s, {elt}-byte weights. Floors in ms "
           "(mem = memory-bound, com = compute-bound) for one base step over B rows of L tokens with `rows` = B·C "
           "masked candidates."), ""]
    out += [("| shape | B | L | rows | base forward | g (sampler step) | LM head + sample | "
            "ADJUST/parallel K=2 | K=4 | K=8 | K=4 restricted (64 ids) | K=4 ctx-cache | base ×floor for 0.80 at K=4 |"),
            "|" + " --- |" * 13]
    for name in ("dream7b", "llada8b"):
        s = SHAPES[name]
        for B, L, C in ((1, 128, 128), (1, 256, 256), (1, 512, 512), (1, 512, 128), (1, 1024, 256),
                        (1, 2048, 256), (16, 128, 128), (16, 512, 128)):
            rows = B * C
            r = [step_ratio(s, B, L, rows, K, elt, bw, rate) for K in (2, 4, 8)]
            rr = step_ratio(s, B, L, rows, 4, elt, bw, rate, restricted_tokens=64)
            rc = step_ratio(s, B, L, rows, 4, elt, bw, rate, cache_context=True)
            slack = base_slack_needed(s, B, L, rows, 4, 0.80, elt, bw, rate)
            out.append(f"| {name} | {B} | {L} | {rows} | {_ms(base_forward_cost(s, B, L, elt), bw, rate)} | "
                       f"{_ms(sampler_step_cost(s, B, L, elt), bw, rate)} | {_ms(lm_head_cost(s, rows, elt), bw, rate)} | "
                       f"{r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {rr:.3f} | {rc:.3f} | {max(slack, 1.0):.2f} |")
    out += ["", "| shape | params: base | layer | sampler g | LM head (bytes) |", "|" + " --- |" * 5]
    for name in ("dream7b", "llada8b"):
        s = SHAPES[name]
        out.append(f"| {name} | {s.base_params / 1e9:.2f} B | {s.layer_params / 1e6:.1f} M | "
                   f"{s.sampler_params / 1e6:.1f} M | {s.lm_head_params / 1e6:.1f} M ({s.lm_head_params * elt / 1e9:.2f} GB) |")
    return "\n".join(out)


def base_cache_table(bw: float = H100_BANDWIDTH, rate: float = H100_BF16_RATE, elt: int = 2, new: int = 128,
                     block: int = 32, K: int = 4) -> str:
    """Markdown: floor tokens/s of the block-cached generations over the uncached ones (same method, K, blocks)."""
    out = [(f"Ceilings: {bw / 1e12:.2f} TB/s, {rate / 1e12:.0f} TFLOP/s, {elt}-byte weights; {new} new tokens in "
            f"blocks of {block}, K = {K}. Each cell: floor of the uncached generation / floor with the cache "
            "(= cached tokens/s over uncached), prefix / dual."), "",
           "| shape | B | prompt | full forward ms | dual window forward ms | parallel | ADJUST | ADJUST ctx-cache |",
           "|" + " --- |" * 8]
    for name in ("dream7b", "llada8b"):
        s = SHAPES[name]
        for B, prompt in ((1, 256), (1, 512), (1, 1024), (16, 256), (16, 512)):
            L = prompt + new
            cells = []
            for method in ("parallel", "adjust", "adjust-ctx"):
                t = {c: floor_seconds(block_generation_costs(s, B, prompt, new, block, K, method, elt, c), bw, rate)
                     for c in (None, "prefix", "dual")}
                cells.append(f"{t[None] / t['prefix']:.2f} / {t[None] / t['dual']:.2f}")
            out.append(f"| {name} | {B} | {prompt} | {_ms(base_forward_cost(s, B, L, elt), bw, rate)} | "
                       f"{_ms(window_forward_cost(s, B, L, block, elt), bw, rate)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(planning_tables() + "\n\n" + base_cache_table() + "\n")
