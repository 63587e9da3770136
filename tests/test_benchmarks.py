"""The benchmark suite on a CPU machine: the floors of the candidate-restricted mode, the GPU-only
cases skipping cleanly, and a tiny real run that writes results with same-run ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.floors import (
    H100_BANDWIDTH,
    H100_BF16_RATE,
    adjust_loop_costs,
    base_forward_cost,
    block_generation_costs,
    context_step_cost,
    final_pass_cost,
    floor_seconds,
    generation_costs,
    kept_ids_cost,
    lm_head_cost,
    restricted_lm_head_cost,
    sampler_step_cost,
    step_costs,
    step_ratio,
    total,
    window_forward_cost,
    window_pass_cost,
)
from benchmarks.shapes import SHAPES

ROOT = Path(__file__).resolve().parents[1]


def test_restricted_floors() -> None:
    s, B, L, rows, elt = SHAPES["dream7b"], 1, 128, 128, 2
    bw, rate = H100_BANDWIDTH, H100_BF16_RATE
    # a restricted pass reads rows·k rows of W: 58.7 MB for 128 rows × 64 ids × 3584 × 2 bytes, not the 1.09 GB W
    assert restricted_lm_head_cost(s, rows, 64, elt).bytes == rows * 64 * 3584 * 2 + rows * 3584 * 2 + rows * 64 * 8
    assert lm_head_cost(s, rows, elt).bytes > 15 * restricted_lm_head_cost(s, rows, 64, elt).bytes
    exact, restricted = step_ratio(s, B, L, rows, 4, elt, bw, rate), step_ratio(s, B, L, rows, 4, elt, bw, rate, 64)
    assert 0.7 < exact < restricted < 0.9  # g still costs three layer reads: the restricted ceiling stays below 0.90
    loop = adjust_loop_costs(s, B, L, rows, 4, elt, candidate_tokens=64)
    assert loop[1] == kept_ids_cost(s, rows, 64, elt) and len(loop) == 2 + 2 * 3
    # context-cached: with a block of 64 candidates in 512 positions, g costs less than over all 512 rows
    assert context_step_cost(s, 1, 512, 64, elt).flops < sampler_step_cost(s, 1, 512, elt).flops / 4
    assert context_step_cost(s, 1, 512, 512, elt).flops == sampler_step_cost(s, 1, 512, elt).flops
    # exact ADJUST's last pass: g at the candidates only, never dearer than a full pass
    assert final_pass_cost(s, 1, 512, 512, elt).flops == sampler_step_cost(s, 1, 512, elt).flops
    assert final_pass_cost(s, 1, 512, 512, elt).bytes == sampler_step_cost(s, 1, 512, elt).bytes
    assert final_pass_cost(s, 1, 512, 64, elt).flops < sampler_step_cost(s, 1, 512, elt).flops / 2
    gen = {m: floor_seconds(generation_costs(s, 1, 0, 128, 4, m, elt), bw, rate) for m in ("parallel", "adjust", "adjust-top64")}
    assert gen["parallel"] < gen["adjust-top64"] < gen["adjust"]


def test_base_cache_floors() -> None:
    s, elt, bw, rate = SHAPES["dream7b"], 2, H100_BANDWIDTH, H100_BF16_RATE
    full, whole = base_forward_cost(s, 1, 512, elt), window_forward_cost(s, 1, 512, 512, elt)
    assert whole.flops == full.flops  # a window of every row is the full forward, plus reading and writing K/V
    assert whole.bytes - full.bytes == 2 * (2 * 28 * 512 * 4 * 128 * 2)
    # 128 tokens in 4 blocks of 32 at K = 4: 8 forwards per block, of which 7 windowed with a cache
    gens = {c: block_generation_costs(s, 1, 384, 128, 32, 4, "parallel", elt, c) for c in (None, "prefix", "dual")}
    assert all(len(g) == 2 * 32 for g in gens.values())  # (forward, LM-head pass) per base step
    flops = {c: total(g).flops for c, g in gens.items()}
    assert flops["dual"] < flops["prefix"] < flops[None]
    t = {c: floor_seconds(g, bw, rate) for c, g in gens.items()}
    assert t["dual"] <= t["prefix"] < t[None]
    # at B = 1 the windowed forward still reads every weight: it cannot beat the weights' read time
    assert window_forward_cost(s, 1, 512, 32, elt).seconds(bw, rate) >= s.num_layers * s.layer_params * elt / bw
    adjust = {c: floor_seconds(block_generation_costs(s, 1, 384, 128, 32, 4, "adjust", elt, c), bw, rate)
              for c in (None, "dual")}
    assert 1 < adjust[None] / adjust["dual"] < t[None] / t["dual"]  # the LM-head passes are not cached
    # g's passes follow the window at a block's later steps (adjust.sampler_block_cache)
    assert window_pass_cost(s, 1, 512, 512, elt).flops == sampler_step_cost(s, 1, 512, elt).flops
    assert window_pass_cost(s, 1, 512, 32, elt).flops < final_pass_cost(s, 1, 512, 32, elt).flops
    # the last pass at C = W candidates is the whole window pass; at fewer, less
    assert window_pass_cost(s, 1, 512, 128, elt, C=128).flops == window_pass_cost(s, 1, 512, 128, elt).flops
    assert window_pass_cost(s, 1, 512, 128, elt, C=32).flops < window_pass_cost(s, 1, 512, 128, elt).flops / 2
    steps = {w: step_costs(s, 1, 512, 32, 4, "adjust", elt, window=w) for w in (None, 32)}
    passes = {w: total(c[2::2]).flops for w, c in steps.items()}  # [base, head, (g, head) × 3]
    assert len(steps[32]) == 8 and passes[32] < passes[None] / 4
    ctx = step_costs(s, 1, 512, 32, 4, "adjust-ctx", elt, window=32)
    assert ctx == step_costs(s, 1, 512, 32, 4, "adjust-ctx", elt)  # context-cached g keeps its own rule


def test_base_cache_rows_render(tmp_path: Path) -> None:
    from benchmarks import report

    rows = [{"shape": "long-8L", "batch": 1, "prompt_len": 384, "gen_len": 128, "block_length": 32, "method": m,
             "K": 4, "backend": "cpp", "base_cache": c, "rounds": 5, "median_s": t, "base_forwards": 32,
             "cached_forwards": 0 if c is None else 28, "floor_s": t / 10, "tokens_per_s": 128 / t,
             **({} if c is None else {"speedup_median": 2.0, "speedup_q1": 1.9, "speedup_q3": 2.1,
                                      "floor_speedup": 3.0})}
            for m in ("parallel", "adjust") for c, t in ((None, 4.0), ("dual", 2.0))]
    results = {"environment": report.environment(), "base_cache": rows, "command": "x"}
    _, mpath = report.finish(results, tmp_path, "t")
    text = mpath.read_text()
    assert "## Base-model block cache" in text and "| long-8L | 384 | 128 | 32 | adjust | 4 | cpp | dual | 5 |" in text
    assert any(line.startswith("dual base cache, adjust K=4 (long-8L") and "2.00x" in line
               for line in results["headline"])


def generation_floor(method: str, ceilings: dict) -> float:
    """The floor of the tiny run's mini-8L B=1 N=16 K=4 generation (fp32) at the given ceilings."""
    s = SHAPES["mini-8L"]
    return floor_seconds(generation_costs(s, 1, s.prompt_len, 16, 4, method, 4), ceilings["bandwidth"],
                         ceilings["flop_rate"])


def _bench(tmp_path: Path, select: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, "ADJUST_BENCH_SHAPES": "mini-8L,dream7b,llada8b"}
    env.pop("TRITON_INTERPRET", None)  # the benchmarks never time the interpreter
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "-k", select,
           "--benchmark-only", "--bench-threads", "1", "--bench-results", str(tmp_path), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600), tmp_path


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these cases run instead of skipping")
def test_gpu_cases_skip_cleanly_here(tmp_path: Path) -> None:
    run, _ = _bench(tmp_path, "dream7b or llada8b or triton")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" not in run.stdout and " skipped" in run.stdout


def test_tiny_run_writes_results_with_restricted_rows(tmp_path: Path) -> None:
    select = ("mini-8L-B1-N16-parallel4-torch or mini-8L-B1-N16-adjust-top644-torch or mini-8L-B1-N16-adjust-ctx4-torch "
              "or mini-8L-B1-L32-C24-lm_head_sample-reference or mini-8L-B1-L32-C24-adjust_loop-reference-ctx")
    run, out = _bench(tmp_path, select, "--benchmark-min-rounds", "1", "--benchmark-max-time", "0.01")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(next(out.glob("*.json")).read_text())
    gen = {r["method"]: r for r in results["generate"]}
    assert set(gen) == {"parallel", "adjust-top64", "adjust-ctx"}
    for m in ("adjust-top64", "adjust-ctx"):
        assert gen[m]["sampler_passes"] == 12 and gen[m]["adjust_over_parallel"] > 0
        # each row's floor is its own method's, at this run's measured ceilings
        assert gen[m]["floor_s"] == pytest.approx(generation_floor(m, results["ceilings"]))
        assert any(f"({m})/parallel" in line for line in results["headline"])
    # (whether an approximation's floor is below exact ADJUST's at this tiny shape depends on the
    # machine's measured ceilings; test_restricted_floors checks that at the Dream-7B shape)
    kern = {(r["op"], r["variant"]): r for r in results["kernels"]}
    assert set(kern) == {("lm_head_sample", "reference"), ("lm_head_sample", "reference-top64"),
                         ("adjust_loop", "reference-ctx")}
    top = kern[("lm_head_sample", "reference-top64")]
    assert top["vs_reference"] == 1.0 and top["bytes"] < kern[("lm_head_sample", "reference")]["bytes"]
