"""End-to-end generation tokens/s: K = 1, naive parallel K and ADJUST K for K ∈ {2, 4, 8}.

Per shape: batch 1 and 16, each of the shape's generation lengths (unblocked, T = 1, entropy
scores), backends torch and cpp (triton on a GPU). Rows record the base forwards and sampler
passes that `generate` counted, and the generation's floor (``floors.generation_costs``) with this
run's measured ceilings, so ADJUST/parallel and time/floor come from one run.

Rounds: after one warm-up call, enough to fill ``--benchmark-max-time`` (at least
``--benchmark-min-rounds``). ``test_adjust_vs_parallel`` times ADJUST and parallel at K = 4
*interleaved* (pairs, alternating which goes first) so that both see the same load on a shared
machine; its median per-pair ratio is the headline.

``adjust-top64`` is candidate-restricted ADJUST (``generate(candidate_tokens=64)``, K = 4 only; torch
and triton backends, shapes with more than 64 tokens); where the pairs' backend has it, each round
runs it too, and its ratio to parallel is a second headline line. ``adjust-ctx`` is
context-cached ADJUST (``generate(cache_context=True)``, K = 4, every backend).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import pytest
import torch

from adjust import generate
from benchmarks._cases import unavailable
from benchmarks._rounds import InterleavedRounds, ratio_quartiles
from benchmarks.floors import floor_seconds, generation_costs, method_options, total
from benchmarks.shapes import DTYPE, SHAPES, ModelShape, selected

BATCHES = (1, 16)
METHODS = (("k1", 1), ("parallel", 2), ("adjust", 2), ("parallel", 4), ("adjust", 4), ("adjust-top64", 4),
           ("adjust-ctx", 4), ("parallel", 8), ("adjust", 8))
BACKENDS = ("torch", "cpp", "triton")


@dataclass(frozen=True)
class Case:
    shape: str
    batch: int
    gen_len: int
    method: str
    K: int
    backend: str

    @property
    def id(self) -> str:
        return f"{self.shape}-B{self.batch}-N{self.gen_len}-{self.method}{self.K}-{self.backend}"


def _cases() -> list:
    """Adjacent rows are the ones compared (parallel K next to ADJUST K), to share the machine's load."""
    out = []
    for shape in unblocked_shapes():
        for B in BATCHES:
            for N in shape.gen_lengths:
                for method, K in METHODS:
                    for backend in BACKENDS:
                        case = Case(shape.name, B, N, method, K, backend)
                        reason = selected(shape) or unavailable(backend) or _restricted_unavailable(method, shape, backend)
                        marks = [pytest.mark.skip(reason=reason)] if reason else []
                        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def unblocked_shapes() -> list[ModelShape]:
    """The shapes of the end-to-end grid (the blocked one is the base-cache benchmark's, test_base_cache.py)."""
    return [shape for shape in SHAPES.values() if shape.block_length is None]


def _restricted_unavailable(method: str, shape: ModelShape, backend: str) -> str | None:
    """Skip reason for a candidate-restricted method, or None."""
    kept = method_options(method).get("candidate_tokens")
    if kept is None:
        return None
    if backend == "cpp":
        return "adjust-top64: the cpp backend has no restricted passes (torch and triton do)"
    if shape.vocab_size <= kept:
        return f"adjust-top64: {shape.name}'s vocabulary has only {shape.vocab_size} tokens (it would be exact ADJUST)"
    return None


def _kwargs(case: Case, sampler) -> dict:
    """`generate` arguments of a case (T = 1, entropy, seed 0)."""
    adjust = case.method.startswith("adjust")
    return {"K": case.K, "sampler": sampler if adjust else None, "max_new_tokens": case.gen_len,
            "batch_size": case.batch, "temperature": 1.0, "alg": "entropy", "seed": 0, "backend": case.backend,
            **method_options(case.method)}


def _prompt(shape: ModelShape, batch: int) -> torch.Tensor | None:
    """``prompt_len`` random non-special tokens per row (None: unconditional from BOS)."""
    if shape.prompt_len == 0:
        return None
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, shape.vocab_size, (batch, shape.prompt_len), generator=g)
    return ids.masked_fill(ids == shape.mask_token_id, 4)


@pytest.mark.parametrize("case", _cases())
def test_generate(case: Case, benchmark, models, record, ceilings, rounds: int, benchmark_max_time: float) -> None:
    shape = SHAPES[case.shape]
    model, sampler = models.get(shape.name, shape)
    prompt = _prompt(shape, case.batch)
    kwargs = _kwargs(case, sampler)
    benchmark.group = f"generate {shape.name} B={case.batch} N={case.gen_len}"
    benchmark.extra_info.update(method=case.method, K=case.K, backend=case.backend)

    t0 = time.perf_counter()
    generate(model, prompt, **kwargs)  # warm-up, and the estimate that sets the rounds
    n = min(100, max(rounds, math.ceil(benchmark_max_time / (time.perf_counter() - t0))))
    out = benchmark.pedantic(lambda: generate(model, prompt, **kwargs), rounds=n, iterations=1)

    assert out.tokens_generated == case.batch * case.gen_len
    assert out.base_forwards == math.ceil(case.gen_len / case.K)
    costs = generation_costs(shape, case.batch, shape.prompt_len, case.gen_len, case.K, case.method, DTYPE.itemsize)
    work = total(costs)
    record.generate(
        benchmark, shape=shape.name, batch=case.batch, prompt_len=shape.prompt_len, gen_len=case.gen_len,
        method=case.method, K=case.K, backend=case.backend, base_forwards=out.base_forwards,
        sampler_passes=out.sampler_passes, tokens=out.tokens_generated,
        floor_s=floor_seconds(costs, ceilings.bandwidth, ceilings.flop_rate), bytes=work.bytes, flops=work.flops,
    )


PAIRED_K = 4
PAIRS = 7
RESTRICTED = "adjust-top64"


def _paired_cases() -> list:
    """K = 4, each shape's longest generation, batch 1 and 16, the fastest backend here."""
    backend = next(b for b in ("triton", "cpp", "torch") if unavailable(b) is None)
    out = []
    for shape in unblocked_shapes():
        if shape.gen_lengths:
            for B in BATCHES:
                case = Case(shape.name, B, max(shape.gen_lengths), "adjust", PAIRED_K, backend)
                reason = selected(shape)
                out.append(pytest.param(case, id=case.id.replace("adjust4", "paired4"),
                                        marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return out


@pytest.mark.parametrize("case", _paired_cases())
def test_adjust_vs_parallel(case: Case, benchmark, models, record, ceilings, rounds: int) -> None:
    """ADJUST K vs parallel K (and restricted ADJUST K), interleaved: each round runs each method once,
    in an order that reverses every round."""
    shape = SHAPES[case.shape]
    model, sampler = models.get(shape.name, shape)
    prompt = _prompt(shape, case.batch)
    methods = ["parallel", "adjust"] + ([] if _restricted_unavailable(RESTRICTED, shape, case.backend) else [RESTRICTED])
    args = {m: _kwargs(Case(case.shape, case.batch, case.gen_len, m, case.K, case.backend), sampler) for m in methods}
    pair = InterleavedRounds({m: (lambda kw=kw: generate(model, prompt, **kw)) for m, kw in args.items()})
    pair()  # warm-up
    pair.reset()
    benchmark.group = f"adjust vs parallel K={case.K}"
    benchmark.pedantic(pair, rounds=max(PAIRS, rounds), iterations=1)
    times = pair.times

    floors = {m: floor_seconds(generation_costs(shape, case.batch, shape.prompt_len, case.gen_len, case.K, m,
                                                DTYPE.itemsize), ceilings.bandwidth, ceilings.flop_rate)
              for m in methods}
    row = {"shape": shape.name, "batch": case.batch, "gen_len": case.gen_len, "K": case.K, "backend": case.backend,
           "pairs": len(times["parallel"]), "tokens": case.batch * case.gen_len,
           "parallel_median_s": statistics.median(times["parallel"])}
    for m, prefix in (("adjust", ""), (RESTRICTED, "restricted_")):
        if m not in times:
            continue
        median, q1, q3 = ratio_quartiles(times["parallel"], times[m])
        row.update({f"{prefix}ratio_median": median, f"{prefix}ratio_q1": q1,
                    f"{prefix}ratio_q3": q3, f"{prefix}ceiling_ratio": floors["parallel"] / floors[m],
                    f"{'restricted' if prefix else 'adjust'}_median_s": statistics.median(times[m])})
    if RESTRICTED in times:
        row["restricted_tokens"] = method_options(RESTRICTED)["candidate_tokens"]
    record.results["paired"].append(row)
