"""Per-kernel timings of one ADJUST step against the pure-PyTorch reference and the floor for the shape.

Ops (``op``) and their variants:

- ``sampler_input`` (embedding gather + Norm_e/Norm_h + DownProj): reference | triton
- ``sampler_step`` (g: the above + the decoder layer + h + Norm_out(·)): module (``AdjustSampler.forward``,
  what the torch/cpp engine runs) | reference (``AdjustLoop`` torch pieces) | triton
- ``lm_head_sample`` (LM head + TOP score + sample at the B·C candidate rows): torch (engine:
  logits + ``sample_tokens``) | reference (``lm_head_sample_reference``) | cpp (logits + ``select_sample``)
  | triton (fused, no logits)
- ``sampler_pass`` (one pass k ≥ 1: g then the LM-head sample): torch | cpp | reference | triton
- ``adjust_loop`` (all K = 4 passes of a base step): reference (eager torch) | triton (eager) |
  triton-graph (one captured CUDA graph)

A ``-top64`` variant is the candidate-restricted mode (``adjust.candidates``) with 64 kept ids per
candidate: ``lm_head_sample(kept_ids=)`` on random sorted ids, and ``AdjustLoop(candidate_tokens=64)``
(pass 0 keeps the ids, passes k ≥ 1 read only those rows of W). Its ``vs ref`` is against
``reference-top64``. A ``-ctx`` variant is ``AdjustLoop(cache_context=True)`` (``adjust.context_cache``): in
``adjust_loop`` the L − C context rows' K/V once, then g over the C candidate rows only; in
``sampler_step`` one such candidate-only pass (its context made beforehand).

Inputs: h ~ N(0, 1) [B, L, d], the last C positions of each row masked and candidate, T = 1, entropy.
On a GPU each timed call runs the op ``INNER_GPU`` times and synchronises once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from adjust.backends import pass_sampler
from adjust.unmasking import SamplingSettings
from benchmarks._cases import unavailable
from benchmarks.floors import (
    Cost,
    adjust_loop_costs,
    context_step_cost,
    floor_seconds,
    lm_head_cost,
    restricted_lm_head_cost,
    sampler_input_cost,
    sampler_step_cost,
    total,
)
from benchmarks.shapes import DEVICE, DTYPE, HAS_CUDA, SHAPES, ModelShape, selected

LOOP_K = 4
INNER_GPU = 10
# (B, L, C) per shape: batch, sequence length, candidates (masked positions) per row.
CASES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # mini-8L: the end-to-end shape (8 prompt + 24 generated), and a long context with a block of 16 candidates
    "mini-8L": ((1, 32, 24), (16, 32, 16), (1, 128, 16)),
    "kern-512": ((1, 128, 64),),
    "dream7b": ((1, 128, 128), (1, 512, 512), (1, 512, 64), (16, 128, 128)),  # (1, 512, 64): a block of 64
    "llada8b": ((1, 128, 128), (16, 128, 128)),
}
KEPT = 64  # kept ids per candidate in the -top64 variants
VARIANTS: dict[str, tuple[str, ...]] = {
    "sampler_input": ("reference", "triton"),
    "sampler_step": ("module", "reference", "triton", "reference-ctx", "triton-ctx"),
    "lm_head_sample": ("torch", "reference", "cpp", "triton", "reference-top64", "triton-top64"),
    "sampler_pass": ("torch", "cpp", "reference", "triton", "reference-top64", "triton-top64"),
    "adjust_loop": ("reference", "triton", "triton-graph", "reference-top64", "triton-top64", "triton-top64-graph",
                    "reference-ctx", "triton-ctx", "triton-ctx-graph"),
}


@dataclass(frozen=True)
class KCase:
    shape: str
    batch: int
    seq_len: int
    candidates: int
    op: str
    variant: str

    @property
    def id(self) -> str:
        return f"{self.shape}-B{self.batch}-L{self.seq_len}-C{self.candidates}-{self.op}-{self.variant}"


def _cases() -> list:
    out = []
    for name, shapes in CASES.items():
        for B, L, C in shapes:
            for op, variants in VARIANTS.items():
                for v in variants:
                    case = KCase(name, B, L, C, op, v)
                    backend = "cpp" if v == "cpp" else v
                    reason = selected(SHAPES[name]) or unavailable(backend)
                    out.append(pytest.param(case, id=case.id, marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return out


@dataclass
class Inputs:
    """One base step's state: h0, tokens, the candidate set (last C positions of each row)."""

    h: Tensor
    x: Tensor
    cand_idx: Tensor
    alive: Tensor
    n_passes: Tensor
    seed_offset: Tensor
    rows: Tensor  # flat indices of the candidate rows in h.view(B·L, d)


def _inputs(shape: ModelShape, B: int, L: int, C: int) -> Inputs:
    g = torch.Generator().manual_seed(2)
    x = torch.randint(4, shape.vocab_size, (B, L), generator=g)
    x = x.masked_fill(x == shape.mask_token_id, 4)
    x[:, L - C:] = shape.mask_token_id
    h = torch.randn(B, L, shape.hidden_size, generator=g)
    cand = torch.arange(L - C, L).expand(B, C).contiguous()
    rows = (torch.arange(B)[:, None] * L + cand).reshape(-1)
    return Inputs(h.to(DEVICE, DTYPE), x.to(DEVICE), cand.to(DEVICE), torch.ones(B, C, dtype=torch.bool, device=DEVICE),
                  torch.full((B,), LOOP_K, dtype=torch.int64, device=DEVICE),
                  torch.tensor([0, 0], dtype=torch.int64, device=DEVICE), rows.to(DEVICE))


def _op(case: KCase, shape: ModelShape, adapter, sampler, inp: Inputs) -> tuple[Callable[[], object], list[Cost]]:
    """The callable timed for this case, and the floor's units."""
    from adjust_kernels.adjust_loop import AdjustLoop
    from adjust_kernels.lm_head_sample import lm_head_sample, lm_head_sample_reference
    from adjust_kernels.sampler_input import sampler_input, sampler_input_reference

    B, L, C, elt = case.batch, case.seq_len, case.candidates, DTYPE.itemsize
    W, E, d = adapter.lm_head_weight, adapter.embed_tokens.weight, shape.hidden_size
    sampling = {"temperature": 1.0, "alg": "entropy", "exclude_token": shape.mask_token_id}
    settings = SamplingSettings(temperature=1.0, alg="entropy")
    triton = case.variant.startswith("triton")
    kept = KEPT if "-top" in case.variant else None
    ctx = "-ctx" in case.variant
    if kept is not None:  # random ascending ids per candidate row, drawn once
        g = torch.Generator().manual_seed(3)
        ids = torch.rand(B * C, shape.vocab_size, generator=g).topk(kept, dim=1).indices.sort(dim=1).values
        sampling.update(kept_ids=ids.to(DEVICE), check_ids=False)

    def loop(num_passes: int = 1) -> AdjustLoop:
        return AdjustLoop(sampler, E, W, None, batch_size=B, seq_len=L, num_candidates=C, num_passes=num_passes,
                          mask_token_id=shape.mask_token_id, temperature=1.0, alg="entropy",
                          candidate_tokens=kept if num_passes > 1 else None, cache_context=ctx,
                          backend="triton" if triton else "torch")

    def engine(backend: str):
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        return pass_sampler(backend, adapter, settings, gen, 0)

    def head(h: Tensor) -> object:
        """LM head + score + sample at the candidate rows of ``h``, as this variant does it."""
        hc = h.reshape(B * L, d).index_select(0, inp.rows)
        if case.variant in ("torch", "cpp"):
            return run_engine(hc, 1)
        f = lm_head_sample if triton else lm_head_sample_reference
        return f(hc, W, None, inp.seed_offset, **sampling)

    run_engine = engine(case.variant) if case.variant in ("torch", "cpp") else None
    if case.op == "sampler_input":
        f = sampler_input if triton else sampler_input_reference
        eps = shape.layer_config.rms_norm_eps
        args = (inp.x, inp.h, E, sampler.norm_e.weight, sampler.norm_h.weight, sampler.down_proj.weight, eps)
        return (lambda: f(*args)), [sampler_input_cost(shape, B * L, elt)]
    if case.op == "sampler_step":
        if case.variant == "module":
            return (lambda: sampler(inp.h, inp.x, adapter)), [sampler_step_cost(shape, B, L, elt)]
        lp = loop()
        if ctx:  # one candidate-only pass; the context's K/V (once per step) are made outside the timing
            context = lp._context(inp.h, inp.x, inp.cand_idx)
            return (lambda: lp._context_step(inp.h, inp.x, context)), [context_step_cost(shape, B, L, C, elt)]
        return (lambda: lp.sampler_step(inp.h, inp.x)), [sampler_step_cost(shape, B, L, elt)]
    head_cost = lm_head_cost(shape, B * C, elt) if kept is None else restricted_lm_head_cost(shape, B * C, kept, elt)
    if case.op == "lm_head_sample":
        return (lambda: head(inp.h)), [head_cost]
    if case.op == "sampler_pass":
        pass_costs = [sampler_step_cost(shape, B, L, elt), head_cost]
        if case.variant in ("torch", "cpp"):
            return (lambda: head(sampler(inp.h, inp.x, adapter))), pass_costs
        lp = loop()
        return (lambda: head(lp.sampler_step(inp.h, inp.x))), pass_costs
    assert case.op == "adjust_loop"
    lp = loop(LOOP_K)
    if case.variant.endswith("-graph"):
        assert lp.capture()
    x0 = inp.x.clone()

    def run() -> object:
        inp.x.copy_(x0)  # every call starts from the same state (B·L + B·C elements)
        inp.alive.fill_(True)
        return lp(inp.h, inp.x, inp.cand_idx, inp.alive, inp.n_passes, inp.seed_offset)

    return run, adjust_loop_costs(shape, B, L, C, LOOP_K, elt, kept, ctx)


@pytest.mark.parametrize("case", _cases())
def test_kernel(case: KCase, benchmark, pass_parts, record, ceilings) -> None:
    shape = SHAPES[case.shape]
    adapter, sampler = pass_parts.get(shape.name, shape)
    inp = _inputs(shape, case.batch, case.seq_len, case.candidates)
    fn, costs = _op(case, shape, adapter, sampler, inp)
    inner = INNER_GPU if HAS_CUDA else 1

    @torch.no_grad()
    def timed() -> None:
        for _ in range(inner):
            fn()
        if HAS_CUDA:
            torch.cuda.synchronize()

    timed()  # warm-up: Triton compilation, allocator, caches
    timed()
    benchmark.group = f"{case.op} {shape.name} B={case.batch} L={case.seq_len} C={case.candidates}"
    benchmark.extra_info.update(variant=case.variant, inner=inner)
    benchmark(timed)
    work = total(costs)
    record.kernel(
        benchmark, inner, shape=shape.name, batch=case.batch, seq_len=case.seq_len, candidates=case.candidates,
        op=case.op, variant=case.variant, floor_s=floor_seconds(costs, ceilings.bandwidth, ceilings.flop_rate),
        bound=work.bound(ceilings.bandwidth, ceilings.flop_rate) if len(costs) == 1 else _bound(costs, ceilings),
        bytes=work.bytes, flops=work.flops,
    )


def _bound(costs: list[Cost], c) -> str:
    """For a sequence of units: which limit holds the larger share of the floor."""
    mem = sum(x.seconds(c.bandwidth, c.flop_rate) for x in costs if x.bound(c.bandwidth, c.flop_rate) == "memory")
    return "memory" if mem >= floor_seconds(costs, c.bandwidth, c.flop_rate) / 2 else "compute"
