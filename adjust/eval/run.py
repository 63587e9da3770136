"""The evaluation driver: every method × K × temperature × seed on a testbed.

One record per (testbed, method, K, temperature, seed) with the testbed's metrics
(means over samples), the per-step joint KL, `base_forwards`, `sampler_passes`,
`tokens`, `seconds` and `tokens_per_s`. Methods: `joint` (K = 1, exact; run once
per temperature and seed), `parallel` (naive, product of marginals) and `adjust`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from adjust.data.testbed import Prompt, Testbed
from adjust.eval.joint_kl import per_step_joint_kl
from adjust.generate import generate
from adjust.models.adapter import as_adapter
from adjust.progress import progress_bar
from adjust.unmasking import SamplingSettings

METHODS = ("joint", "parallel", "adjust")
# The metric each testbed is judged by, and whether higher is better.
MAIN_METRIC = {"synthetic": ("valid", True), "tasks": ("correct", True), "text": ("mauve", True), "text-long": ("match", True),
               "mirror": ("valid", True), "dyck": ("valid", True)}
# Seeds of evaluation prompts/sampling are kept far from the training seeds.
EVAL_SEED = 1_000_000


@dataclass
class EvalConfig:
    methods: tuple[str, ...] = METHODS
    Ks: tuple[int, ...] = (1, 2, 4, 8)
    temperatures: tuple[float, ...] = (0.6, 1.0)
    seeds: int = 3
    num_samples: int = 256
    batch_size: int = 256
    top_p: float | None = None
    alg: str = "entropy"
    joint_kl: bool = True
    candidate_tokens: int | None = None  # the adjust method's candidate restriction (adjust.candidates)
    cache_context: bool = False  # the adjust method's context-cached passes (adjust.context_cache)
    block_length: int | None = None  # semi-AR blocks (every method)
    base_cache: str | None = None  # every method's base-model block cache (adjust.base_cache); needs block_length
    allow_base_mismatch: bool = False  # a sampler recorded for a base with other weights (adjust.identity)
    extra_metrics: list = field(default_factory=list)  # callables(records, completions) -> None


def _runs(cfg: EvalConfig, has_sampler: bool) -> list[tuple[str, int]]:
    if cfg.num_samples < 1 or cfg.seeds < 1:
        raise ValueError(f"num_samples and seeds must be ≥ 1, got {cfg.num_samples} and {cfg.seeds}")
    bad = [k for k in cfg.Ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"Ks: every K must be an int ≥ 1, got {bad[0]!r}")
    runs = []
    for method in cfg.methods:
        if method not in METHODS:
            raise ValueError(f"methods: unknown method {method!r} (choose from {METHODS})")
        if method == "adjust" and not has_sampler:
            raise ValueError("methods: 'adjust' needs a sampler")
        Ks = [1] if method == "joint" else [k for k in cfg.Ks if k > 1]
        runs += [(method, K) for K in Ks]
    if not runs:  # e.g. parallel at K = 1 only: that run is joint's
        raise ValueError(f"nothing to evaluate: {', '.join(cfg.methods) or 'no methods'} at K in {list(cfg.Ks)} "
                         "(parallel and adjust run at the K > 1; K = 1 is the joint method)")
    return runs


def evaluate(
    model, sampler, testbed: Testbed, cfg: EvalConfig | None = None, progress: bool = True
) -> list[dict]:
    """Generate with every method/K/T/seed and score with the testbed's metrics."""
    cfg = cfg or EvalConfig()
    adapter = as_adapter(model)
    bos = [adapter.bos_token_id] if adapter.bos_token_id is not None else []
    runs = _runs(cfg, sampler is not None)
    records = []
    bar = progress_bar(total=len(runs) * len(cfg.temperatures) * cfg.seeds, desc=f"eval {testbed.name}",
                       disable=not progress)
    for T in cfg.temperatures:
        settings = SamplingSettings(temperature=T, top_p=cfg.top_p, alg=cfg.alg)
        for seed in range(cfg.seeds):
            prompts = testbed.prompts(cfg.num_samples, seed=EVAL_SEED + seed)
            for method, K in runs:
                rec, completions = run_one(model, sampler if method == "adjust" else None, testbed, prompts,
                                            bos, K, settings, seed, cfg)
                rec.update(testbed=testbed.name, method=method, K=K, temperature=T, seed=seed)
                if method == "adjust" and cfg.candidate_tokens is not None:
                    rec["candidate_tokens"] = cfg.candidate_tokens
                if method == "adjust" and cfg.cache_context:
                    rec["cache_context"] = True
                add_record(records, rec, completions, cfg.extra_metrics)
                bar.update(1)
    bar.close()
    return records


def add_record(records: list[dict], rec: dict, completions: list[list[int]], extra_metrics: list) -> None:
    """Append ``rec`` after the extra metrics (callables(record, completions)) have added to it."""
    for metric in extra_metrics:
        metric(rec, completions)
    records.append(rec)


def run_one(model, sampler, testbed, prompts: list[Prompt], bos, K, settings, seed, cfg,
             decoding=None) -> tuple[dict, list]:
    """Generate for every prompt (in batches) with one method; score; the record and the completions.

    ``cfg`` needs ``batch_size``, ``joint_kl``, ``candidate_tokens``, ``cache_context``, ``block_length`` and
    ``base_cache``; ``decoding`` is an `adjust.decoding` policy (None: the fixed-count method of ``K`` and
    ``sampler``). The record names the blocks and the base cache when they are set."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    completions: list[list[int]] = []
    base_forwards = sampler_passes = tokens = row_forwards = 0
    seconds = kl_total = 0.0
    kl_tokens = 0
    for i in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[i : i + cfg.batch_size]
        out = generate(model, [bos + p.ids for p in chunk], K=K, sampler=sampler, max_new_tokens=testbed.gen_length,
                       temperature=settings.temperature, top_p=settings.top_p, alg=settings.alg,
                       seed=seed * 7919 + i, return_history=cfg.joint_kl,
                       candidate_tokens=cfg.candidate_tokens if sampler is not None else None,
                       cache_context=cfg.cache_context and sampler is not None, decoding=decoding,
                       allow_base_mismatch=cfg.allow_base_mismatch, block_length=cfg.block_length,
                       base_cache=cfg.base_cache)
        base_forwards += out.base_forwards
        sampler_passes += out.sampler_passes
        tokens += out.tokens_generated
        row_forwards += int(out.row_forwards.sum())
        seconds += out.seconds
        for p, row in zip(chunk, out.completions.tolist()):
            completions.append(row)
            for k, v in testbed.score(p, row).items():
                sums[k] += v
                counts[k] += 1
        if cfg.joint_kl:
            kl = per_step_joint_kl(model, out, settings)
            kl_total += kl["joint_kl"] * kl["joint_kl_tokens"]
            kl_tokens += kl["joint_kl_tokens"]
    rec = {k: sums[k] / counts[k] for k in sums}
    if cfg.joint_kl:
        rec["joint_kl"] = kl_total / kl_tokens if kl_tokens else math.nan
    if cfg.block_length is not None:
        rec["block_length"] = cfg.block_length
    if cfg.base_cache is not None:
        rec["base_cache"] = cfg.base_cache
    rec.update(base_forwards=base_forwards, sampler_passes=sampler_passes, tokens=tokens, seconds=seconds,
               tokens_per_s=tokens / seconds if seconds > 0 else math.nan, num_samples=len(prompts),
               tpf=tokens / row_forwards if row_forwards else math.nan)
    return rec, completions


def method_label(rec: dict) -> str:
    """The method of a record; approximate runs are labelled apart (``adjust top-k'``, ``adjust ctx-cache``,
    ``parallel dual-cache`` for the base-model block cache)."""
    k = rec.get("candidate_tokens")
    label = rec["method"] if k is None else f"{rec['method']} top-{k}"
    label = label + " ctx-cache" if rec.get("cache_context") else label
    return label + f" {rec['base_cache']}-cache" if rec.get("base_cache") else label


def summarize(records: list[dict], metrics: list[str]) -> list[dict]:
    """Mean ± sd over seeds per (testbed, method label, K, temperature)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["testbed"], method_label(r), r["K"], r["temperature"])].append(r)
    rows = []
    for (tb, method, K, T), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][2], kv[0][1])):
        row = {"testbed": tb, "method": method, "K": K, "temperature": T, "seeds": len(rs)}
        for m in metrics + ["joint_kl", "tokens_per_s"]:
            vals = [r[m] for r in rs if m in r and not math.isnan(r[m])]
            if vals:
                row[m] = statistics.fmean(vals)
                row[m + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def _base_cache_suffix(label: str) -> str:
    """The base-cache part of a method label (every method of such a run carries it), or ''."""
    return next((f" {c}-cache" for c in ("prefix", "dual") if label.endswith(f" {c}-cache")), "")


def gap_closed(rows: list[dict], metric: str) -> dict[tuple, float]:
    """(parallel − ADJUST)/(parallel − K=1) per (testbed, K, T, ADJUST label): 1 = ADJUST matches exact sampling.

    A base-cached ADJUST run is measured against the parallel and K = 1 runs with the same base cache."""
    by = {(r["testbed"], r["K"], r["temperature"], r["method"]): r.get(metric) for r in rows}
    out = {}
    for (tb, K, T, method), val in by.items():
        suffix = _base_cache_suffix(method)
        if not method.startswith("adjust") or (tb, K, T, "parallel" + suffix) not in by:
            continue
        par, ex = by[(tb, K, T, "parallel" + suffix)], by.get((tb, 1, T, "joint" + suffix))
        if None not in (par, ex, val) and abs(par - ex) > 1e-12:
            out[(tb, K, T, method)] = (par - val) / (par - ex)
    return out


def format_table(rows: list[dict], metrics: list[str]) -> str:
    """A markdown table of `summarize` rows."""
    cols = metrics + ["joint_kl", "tokens_per_s"]
    head = "| testbed | T | method | K | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    for r in rows:
        cells = []
        for c in cols:
            if c not in r:
                cells.append("–")
            elif c == "tokens_per_s":
                cells.append(f"{r[c]:,.0f}")
            else:
                cells.append(f"{r[c]:.3f} ± {r[c + '_sd']:.3f}")
        lines.append(f"| {r['testbed']} | {r['temperature']} | {r['method']} | {r['K']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
