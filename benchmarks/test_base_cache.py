"""The base-model block cache end to end: tokens/s with and without ``base_cache``, in the same rounds.

Shapes with a ``block_length`` (``long-8L`` on CPU: random 8 layers × d128, a 384-token prompt, 128
new tokens in blocks of 32): parallel K = 4, ADJUST K = 4 and context-cached ADJUST K = 4, each with
no cache, the prefix cache and the dual cache (T = 1, entropy scores, seed 0, the fastest backend
here). Each round runs all nine once, in an order that reverses every round, so every cached run
and its uncached twin see the same load; a row's ``speedup`` is the median over rounds of
t_uncached / t_cached (= cached tokens/s over uncached), with its IQR, beside the same ratio of the
floors (``floors.block_generation_costs``) at this run's measured ceilings.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from adjust import generate
from benchmarks._cases import unavailable
from benchmarks._rounds import InterleavedRounds, ratio_quartiles
from benchmarks.floors import block_generation_costs, floor_seconds, method_options
from benchmarks.shapes import DTYPE, SHAPES, ModelShape, selected

K = 4
METHODS = ("parallel", "adjust", "adjust-ctx")
CACHES = (None, "prefix", "dual")
ROUNDS = 5


def _cases() -> list:
    backend = next(b for b in ("triton", "cpp", "torch") if unavailable(b) is None)
    out = []
    for shape in SHAPES.values():
        if shape.block_length is None:
            continue
        reason = selected(shape)
        out.append(pytest.param((shape.name, backend), id=f"{shape.name}-B1-N{max(shape.gen_lengths)}-{backend}",
                                marks=[pytest.mark.skip(reason=reason)] if reason else []))
    return out


def _prompt(shape: ModelShape) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, shape.vocab_size, (1, shape.prompt_len), generator=g)
    return ids.masked_fill(ids == shape.mask_token_id, 4)


@pytest.mark.parametrize("case", _cases())
def test_base_cache_speedup(case, benchmark, models, record, ceilings, rounds: int) -> None:
    name, backend = case
    shape = SHAPES[name]
    model, sampler = models.get(shape.name, shape)
    prompt, N = _prompt(shape), max(shape.gen_lengths)
    runs = {}
    for method in METHODS:
        for cache in CACHES:
            kw = dict(K=K, sampler=sampler if method.startswith("adjust") else None, max_new_tokens=N,
                      block_length=shape.block_length, temperature=1.0, alg="entropy", seed=0, backend=backend,
                      base_cache=cache, **method_options(method))
            runs[(method, cache)] = lambda kw=kw: generate(model, prompt, **kw)
    timed = InterleavedRounds(runs)
    timed()  # warm-up
    timed.reset()
    benchmark.group = f"base cache {shape.name}"
    benchmark.pedantic(timed, rounds=max(ROUNDS, rounds), iterations=1)
    times, outputs = timed.times, timed.outputs

    for method in METHODS:
        floors = {c: floor_seconds(block_generation_costs(shape, 1, shape.prompt_len, N, shape.block_length, K, method,
                                                          DTYPE.itemsize, c), ceilings.bandwidth, ceilings.flop_rate)
                  for c in CACHES}
        for cache in CACHES:
            out = outputs[(method, cache)]
            assert out.tokens_generated == N
            row = {"shape": shape.name, "batch": 1, "prompt_len": shape.prompt_len, "gen_len": N,
                   "block_length": shape.block_length, "method": method, "K": K, "backend": backend,
                   "base_cache": cache, "rounds": len(times[(method, cache)]),
                   "median_s": statistics.median(times[(method, cache)]),
                   "base_forwards": out.base_forwards, "cached_forwards": out.cached_forwards,
                   "floor_s": floors[cache]}
            row["tokens_per_s"] = N / row["median_s"]
            if cache is not None:
                median, q1, q3 = ratio_quartiles(times[(method, None)], times[(method, cache)])
                row.update(speedup_median=median, speedup_q1=q1, speedup_q3=q3,
                           floor_speedup=floors[None] / floors[cache])
            record.results["base_cache"].append(row)
