"""The quality-vs-parallelism frontier: every decoding method over its own knob, on one testbed, in one run.

Each method of `adjust.decoding` has one knob that trades quality for parallelism:

=================  ==============================================  =======  =======================
method             policy                                          knob     default sweep
=================  ==============================================  =======  =======================
joint              `Exact` (the anchor of every curve, TPF = 1)    —        —
parallel           `Parallel(K)`                                   K        2, 4, 8
adjust             `Adjust(K)` (needs the sampler)                 K        2, 4, 8
threshold          `Threshold(τ)`, alg ``confidence`` (Fast-dLLM)  tau      0.99 … 0.1 (9 values)
entropy_bound      `EntropyBound(γ)` (EB-sampler)                  gamma    0.1 … 8 (7 values)
adjust_threshold   `AdaptiveAdjust("threshold", τ, K_max)`         tau      as threshold
adjust_entropy     `AdaptiveAdjust("entropy", γ, K_max)`           gamma    as entropy_bound
edlm               `EDLM(judge, K)` (2 draws)                      K        2, 4, 8
apd                `APD(judge, w)`                                 weight   0.2, 0.4, 0.6, 0.8, 0.95
=================  ==============================================  =======  =======================

Every run is a record like `adjust.eval.run.evaluate`'s (the testbed's metrics, ``tokens_per_s``
measured in this same run, ``base_forwards`` ...) plus ``knob`` / ``value`` and ``tpf``: tokens
per base forward of a row that still had masks (the parallelism, whatever the method).

The summary number of a method is the **area under its frontier**: its points (and the exact
anchor at TPF = 1) are reduced to their upper envelope — the best quality reached at *at least*
a given TPF — interpolated linearly in log2 TPF, counted as 0 past the method's largest TPF,
and averaged over log2 TPF ∈ [0, log2 ``max_tpf``]. For a metric in [0, 1] it lies in [0, 1]:
1 = exact quality at every parallelism up to ``max_tpf``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace

from adjust.data.testbed import Testbed
from adjust.decoding import APD, EDLM, AdaptiveAdjust, Adjust, EntropyBound, Exact, Parallel, Threshold
from adjust.decoding.judge import ARJudge, judge_for_testbed
from adjust.eval.run import EVAL_SEED, add_record, run_one
from adjust.models.adapter import as_adapter
from adjust.progress import progress_bar
from adjust.unmasking import SamplingSettings

FRONTIER_METHODS = ("joint", "parallel", "adjust", "threshold", "entropy_bound", "adjust_threshold",
                    "adjust_entropy", "edlm", "apd")
KNOBS = {"joint": None, "parallel": "K", "adjust": "K", "edlm": "K", "threshold": "tau", "adjust_threshold": "tau",
         "entropy_bound": "gamma", "adjust_entropy": "gamma", "apd": "weight"}
NEEDS_SAMPLER = ("adjust", "adjust_threshold", "adjust_entropy")
NEEDS_JUDGE = ("edlm", "apd")
CONFIDENCE_METHODS = ("threshold", "adjust_threshold")  # Fast-dLLM thresholds the sampled token's probability
LOWER_IS_BETTER = ("nll", "nll_smoothed", "judge_nll", "joint_kl")


@dataclass
class FrontierConfig:
    methods: tuple[str, ...] = FRONTIER_METHODS
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "K": (2, 4, 8), "tau": (0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1),
        "gamma": (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        "weight": (0.2, 0.4, 0.6, 0.8, 0.95)})
    max_tokens: int = 8  # K_max of the adaptive ADJUST methods
    temperatures: tuple[float, ...] = (1.0,)
    seeds: int = 3
    num_samples: int = 256
    batch_size: int = 256
    top_p: float | None = None
    alg: str = "entropy"  # the position score of every method but the confidence thresholds
    joint_kl: bool = False  # per-step joint KL (not defined for edlm / apd, which are never measured)
    candidate_tokens: int | None = None
    cache_context: bool = False
    block_length: int | None = None
    base_cache: str | None = None
    allow_base_mismatch: bool = False  # a sampler recorded for a base with other weights (adjust.identity)
    extra_metrics: list = field(default_factory=list)


def policy_for(method: str, value, cfg: FrontierConfig, judge: ARJudge | None):
    """The `adjust.decoding` policy of ``method`` at knob ``value``."""
    if method == "joint":
        return Exact()
    if method == "parallel":
        return Parallel(int(value))
    if method == "adjust":
        return Adjust(int(value))
    if method == "threshold":
        return Threshold(value)
    if method == "entropy_bound":
        return EntropyBound(value)
    if method == "adjust_threshold":
        return AdaptiveAdjust("threshold", value, cfg.max_tokens)
    if method == "adjust_entropy":
        return AdaptiveAdjust("entropy", value, cfg.max_tokens)
    if method == "edlm":
        return EDLM(judge, int(value))
    if method == "apd":
        return APD(judge, value)
    raise ValueError(f"methods: unknown method {method!r} (choose from {FRONTIER_METHODS})")


def _runs(cfg: FrontierConfig, has_sampler: bool) -> list[tuple[str, float | None]]:
    runs = []
    for method in cfg.methods:
        if method not in FRONTIER_METHODS:
            raise ValueError(f"methods: unknown method {method!r} (choose from {FRONTIER_METHODS})")
        if method in NEEDS_SAMPLER and not has_sampler:
            raise ValueError(f"methods: {method!r} needs a sampler")
        knob = KNOBS[method]
        values = [None] if knob is None else [v for v in cfg.grid[knob] if knob != "K" or v > 1]
        runs += [(method, v) for v in values]
    return runs


def run_frontier(model, sampler, testbed: Testbed, cfg: FrontierConfig | None = None, judge: ARJudge | None = None,
                 progress: bool = True) -> list[dict]:
    """Every method at every knob value, temperature and seed on ``testbed``; one record each.

    ``judge`` (EDLM / APD): default `judge_for_testbed(testbed.name)`."""
    cfg = cfg or FrontierConfig()
    adapter = as_adapter(model)
    bos = [adapter.bos_token_id] if adapter.bos_token_id is not None else []
    runs = _runs(cfg, sampler is not None)
    if judge is None and any(m in NEEDS_JUDGE for m, _ in runs):
        judge = judge_for_testbed(testbed.name)
    records = []
    bar = progress_bar(total=len(runs) * len(cfg.temperatures) * cfg.seeds, desc=f"frontier {testbed.name}",
               disable=not progress)
    for T in cfg.temperatures:
        for seed in range(cfg.seeds):
            prompts = testbed.prompts(cfg.num_samples, seed=EVAL_SEED + seed)
            for method, value in runs:
                alg = "confidence" if method in CONFIDENCE_METHODS else cfg.alg
                settings = SamplingSettings(temperature=T, top_p=cfg.top_p, alg=alg)
                run_cfg = replace(cfg, joint_kl=cfg.joint_kl and method not in NEEDS_JUDGE)
                rec, completions = run_one(model, sampler if method in NEEDS_SAMPLER else None, testbed, prompts, bos,
                                            1, settings, seed, run_cfg, decoding=policy_for(method, value, cfg, judge))
                rec.update(testbed=testbed.name, method=method, knob=KNOBS[method], value=value, alg=alg,
                           temperature=T, seed=seed, K=int(value) if KNOBS[method] == "K" else None)
                if method in ("adjust_threshold", "adjust_entropy"):
                    rec["max_tokens"] = cfg.max_tokens
                add_record(records, rec, completions, cfg.extra_metrics)
                bar.update(1)
    bar.close()
    return records


def frontier_rows(records: list[dict], metric: str) -> list[dict]:
    """Mean ± sd over seeds per (testbed, temperature, method, knob value): ``metric``, tpf, tokens_per_s."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["testbed"], r["temperature"], r["method"], r["value"])].append(r)
    rows = []
    for (tb, T, method, value), rs in groups.items():
        row = {"testbed": tb, "temperature": T, "method": method, "knob": rs[0]["knob"], "value": value,
               "seeds": len(rs)}
        for m in (metric, "tpf", "tokens_per_s", "joint_kl"):
            vals = [r[m] for r in rs if m in r and not math.isnan(r[m])]
            if vals:
                row[m] = statistics.fmean(vals)
                row[m + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    order = {m: i for i, m in enumerate(FRONTIER_METHODS)}
    return sorted(rows, key=lambda r: (r["testbed"], r["temperature"], order.get(r["method"], 99), r.get("tpf", 0)))


def envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper envelope of (tpf, quality) points: at each point's TPF, the best quality of any point
    with at least that TPF; sorted by TPF, quality non-increasing."""
    pts = sorted(points)
    out, best = [], -math.inf
    for t, q in reversed(pts):
        best = max(best, q)
        out.append((t, best))
    return out[::-1]


def quality_at(points: list[tuple[float, float]], tpf: float) -> float | None:
    """The envelope's quality at ``tpf`` (linear in log2 TPF between points), None past its largest TPF."""
    env = envelope(points)
    if not env or tpf > env[-1][0] + 1e-9:
        return None
    if tpf <= env[0][0]:
        return env[0][1]
    for (t0, q0), (t1, q1) in zip(env, env[1:]):
        if t0 <= tpf <= t1:
            w = 0.0 if t1 == t0 else (math.log2(tpf) - math.log2(t0)) / (math.log2(t1) - math.log2(t0))
            return q0 + w * (q1 - q0)
    return env[-1][1]


def area_under_frontier(points: list[tuple[float, float]], max_tpf: float = 8.0) -> float:
    """Mean envelope quality over log2 TPF ∈ [0, log2 max_tpf], 0 where the method does not reach (module
    docstring); exact for the piecewise-linear envelope."""
    if max_tpf <= 1:
        raise ValueError(f"max_tpf must be > 1, got {max_tpf}")
    span = math.log2(max_tpf)
    env = [(math.log2(t), q) for t, q in envelope(points)]
    if not env:
        return 0.0
    knots = [(0.0, env[0][1])] + [(u, q) for u, q in env if u > 0]  # flat before the first point
    area = 0.0
    for (u0, q0), (u1, q1) in zip(knots, knots[1:]):
        if u0 >= span:
            break
        end = min(u1, span)
        q_end = q0 + (q1 - q0) * (end - u0) / (u1 - u0) if u1 > u0 else q1
        area += (end - u0) * (q0 + q_end) / 2
    return area / span


def summarize_frontier(rows: list[dict], metric: str, max_tpf: float = 8.0,
                       matched: tuple[float, ...] = (2.0, 4.0, 8.0)) -> list[dict]:
    """Per (testbed, temperature, method): the area under its frontier and its quality at the ``matched`` TPFs.

    Every method's curve includes the exact anchor (``joint``, TPF 1) of its testbed and temperature. For a
    lower-is-better metric (`LOWER_IS_BETTER`) the envelope keeps the lowest value and there is no area
    (None): counting 0 past a method's reach would reward it."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if metric in r and "tpf" in r:
            by[(r["testbed"], r["temperature"])].append(r)
    out = []
    for (tb, T), rs in by.items():
        anchor = [(r["tpf"], r[metric]) for r in rs if r["method"] == "joint"]
        for method in dict.fromkeys(r["method"] for r in rs):
            if method == "joint":
                continue
            pts = [(t, sign * q) for t, q in anchor + [(r["tpf"], r[metric]) for r in rs if r["method"] == method]]
            row = {"testbed": tb, "temperature": T, "method": method,
                   "auc": area_under_frontier(pts, max_tpf) if sign > 0 else None, "max_tpf": max(t for t, _ in pts)}
            row.update({f"at_tpf_{t:g}": None if (q := quality_at(pts, t)) is None else sign * q for t in matched})
            out.append(row)
    return out


def format_frontier(rows: list[dict], summary: list[dict], metric: str, max_tpf: float = 8.0) -> str:
    """Markdown: every frontier point, then the per-method summary (area, quality at matched TPF)."""
    cols = [metric] + (["joint_kl"] if any("joint_kl" in r for r in rows) else [])
    lines = [f"| testbed | T | method | knob | TPF | tokens/s | {' | '.join(cols)} |", "|---|---|---|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        knob = "–" if r["knob"] is None else f"{r['knob']}={r['value']:g}"
        cells = [f"{r[c]:.3f} ± {r[c + '_sd']:.3f}" if c in r else "–" for c in cols]
        lines.append(f"| {r['testbed']} | {r['temperature']} | {r['method']} | {knob} | {r.get('tpf', math.nan):.2f} | "
                     f"{r.get('tokens_per_s', math.nan):,.0f} | {' | '.join(cells)} |")
    matched = [k for k in (summary[0] if summary else {}) if k.startswith("at_tpf_")]
    lines += ["", f"| testbed | T | method | area under frontier (TPF 1–{max_tpf:g}) | largest TPF | "
              + " | ".join(f"{metric} at TPF {k[7:]}" for k in matched) + " |",
              "|---|---|---|---|---|" + "---|" * len(matched)]
    for s in sorted(summary, key=lambda s: (s["testbed"], s["temperature"], -(s["auc"] or 0.0))):
        cells = ["–" if s[k] is None else f"{s[k]:.3f}" for k in matched]
        auc = "–" if s["auc"] is None else f"{s['auc']:.3f}"
        lines.append(f"| {s['testbed']} | {s['temperature']} | {s['method']} | {auc} | {s['max_tpf']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
