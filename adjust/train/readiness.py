"""Readiness readout: does a sampler *generate* close to exact sampling?

Teacher-forced held-out KL ranks samplers poorly: a KL 8× below parallel's has gone with
ADJUST closing only 38% of the parallel → K = 1 gap in generated validity. So at each
evaluation `train_sampler` also runs real ADJUST generation on held-out prompts, at
K = 2, R + 1 and 2(R + 1), and measures the per-step joint KL against exact sampling
(`adjust.eval.joint_kl`: log q − log p* of the committed tokens, nats/token). The
readout is

    closed(K) = 1 − KL_adjust(K) / KL_parallel(K)

the share of naive parallel's joint KL that the sampler removes: 1 = exact sampling,
0 = no better than parallel, < 0 = worse than parallel (an under-trained sampler is).
Parallel's KL is measured once, on the same prompts, with the same seeds, and kept in the
run folder (`PARALLEL_NAME`): a resumed run and each run of the inputs race read it instead of
measuring it again (about a readout's cost each on text). The prompts
and sampling settings are those of the held-out trajectories, so the readout measures
the distribution the sampler was trained for. When the base names a built-in testbed
with a per-sample scorer, the testbed's metric of ADJUST's samples is reported beside
the same metric of parallel's samples and of the held-out K = 1 trajectories.

`verdict` turns the readout into ``ready`` / ``not ready``: the thresholds
(`READY_CLOSED`) were calibrated against generated quality on the testbeds in
docs/training.md ("How to read the readout"). Where the readout has the testbed's scorer,
*ready* also needs the metric's share of the parallel → K = 1 gap closed to reach
`READY_METRIC` (90% up to K = R + 1, 75% at 2(R + 1)) by more than one standard error of that
share (delta method over the three sample means): on mirror the joint-KL thresholds alone said
ready at 99.1% closed while the samples closed 88% of the validity gap.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from adjust.data.testbed import Prompt
from adjust.eval.joint_kl import per_step_joint_kl
from adjust.eval.run import MAIN_METRIC
from adjust.fileio import write_text
from adjust.generate import generate
from adjust.models.adapter import DiffusionLMAdapter
from adjust.train.trajectories import Trajectories, trajectory_prompt
from adjust.unmasking import SamplingSettings

# closed(K) needed for the "ready" verdict: at every K up to R + 1, and at K = 2(R + 1) (the
# passes past R are not trained, so a little more loss is allowed there).
READY_CLOSED = (0.99, 0.98)
# Below those but ≥ this at every K, the warning says "near": on the testbeds of docs/training.md
# 95–99% closed was 88–93% of the validity gap on dyck and synthetic, 70–88% on mirror.
NEAR_CLOSED = 0.95
# Where the readout has the testbed's scorer, ready also needs this share of the parallel -> K = 1 gap
# of its metric closed (up to K = R + 1, at 2(R + 1)), less one standard error.
READY_METRIC = (0.90, 0.75)
READOUT_SEED = 4242  # generation seeds of the readout: the same at every evaluation
PARALLEL_NAME = "readout_parallel.json"  # parallel's readout, measured once per run folder


def readout_Ks(rollout: int) -> tuple[int, ...]:
    """The Ks ADJUST is checked (and, on-policy, trained) at: 2, R + 1 and 2(R + 1)."""
    return tuple(sorted({2, rollout + 1, 2 * (rollout + 1)}))


@dataclass
class Readout:
    """One readiness measurement (see the module docstring)."""

    step: int
    Ks: tuple[int, ...]
    adjust_kl: dict[int, float]
    parallel_kl: dict[int, float]
    metric: str | None = None  # the testbed's metric, when it has a per-sample scorer
    adjust_metric: dict[int, float] | None = None
    parallel_metric: dict[int, float] | None = None
    exact_metric: float | None = None
    # standard errors of those sample means (sd / sqrt(n))
    adjust_metric_se: dict[int, float] | None = None
    parallel_metric_se: dict[int, float] | None = None
    exact_metric_se: float | None = None

    def closed(self, K: int) -> float:
        """Share of parallel's joint KL removed at K."""
        par = self.parallel_kl[K]
        return 1.0 - self.adjust_kl[K] / par if par > 0 else math.nan

    def score(self) -> float:
        """The number checkpoints are ranked by: the mean of closed(K) over the readout's Ks (a K where
        parallel is already exact, closed = nan, has nothing to rank by and is left out)."""
        vals = [v for v in (self.closed(K) for K in self.Ks) if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else -math.inf

    def metric_closed(self, K: int) -> float | None:
        """Share of the parallel → K = 1 gap of the testbed metric closed at K (None without a scorer)."""
        if self.adjust_metric is None or self.exact_metric is None:
            return None
        gap = self.exact_metric - self.parallel_metric[K]
        return (self.adjust_metric[K] - self.parallel_metric[K]) / gap if abs(gap) > 1e-9 else None

    def metric_closed_se(self, K: int) -> float | None:
        """Standard error of `metric_closed` (delta method, the three means independent): with
        g = (a − p) / (e − p), se² = (se_a² + (1 − g)² se_p² + g² se_e²) / (e − p)²."""
        g = self.metric_closed(K)
        if g is None or self.adjust_metric_se is None:
            return None
        gap = self.exact_metric - self.parallel_metric[K]
        var = (self.adjust_metric_se[K] ** 2 + (1 - g) ** 2 * self.parallel_metric_se[K] ** 2
               + g**2 * self.exact_metric_se**2)
        return math.sqrt(var) / abs(gap)

    def to_record(self) -> dict:
        """The `train_log.jsonl` / checkpoint form."""
        rec: dict = {"step": self.step}
        for K in self.Ks:
            rec[f"K{K}"] = {"adjust_kl": round(self.adjust_kl[K], 5), "parallel_kl": round(self.parallel_kl[K], 5),
                            "closed": round(self.closed(K), 4)}
            if self.metric is not None:
                mc, se = self.metric_closed(K), self.metric_closed_se(K)
                rec[f"K{K}"].update({f"adjust_{self.metric}": round(self.adjust_metric[K], 4),
                                     f"parallel_{self.metric}": round(self.parallel_metric[K], 4),
                                     f"{self.metric}_closed": None if mc is None else round(mc, 4),
                                     f"{self.metric}_closed_se": None if se is None else round(se, 4)})
        if self.metric is not None:
            rec[f"exact_{self.metric}"] = round(self.exact_metric, 4)
        metric_closed = None
        if self.metric is not None:
            metric_closed = {K: (self.metric_closed(K), self.metric_closed_se(K)) for K in self.Ks}
        rec["verdict"], rec["why"] = verdict({K: self.closed(K) for K in self.Ks}, metric_closed, self.metric)
        return rec

    def summary(self) -> str:
        """One progress line, e.g. ``joint KL closed K=4 93% K=8 81% (valid 0.85/0.82)``."""
        parts = [f"K={K} {100 * self.closed(K):.0f}%" for K in self.Ks]
        text = "joint KL closed " + " ".join(parts)
        if self.metric is not None:
            vals = "/".join(f"{self.adjust_metric[K]:.2f}" for K in self.Ks)
            text += f" ({self.metric} {vals}; K=1 {self.exact_metric:.2f})"
        return text


def verdict(closed: dict[int, float], metric_closed: dict[int, tuple[float | None, float | None]] | None = None,
            metric: str | None = None) -> tuple[str, str]:
    """(``"ready"`` | ``"not ready"``, a sentence saying why) from closed(K) at the readout's Ks
    (ascending; the largest, 2(R + 1), is held to the second threshold, every other to the first)
    and, where the testbed has a scorer, from its gap closed (value, standard error) per K, held to
    `READY_METRIC` less one standard error (a K whose gap is undefined, None, is not held)."""
    Ks = sorted(closed)
    last = {K: K == Ks[-1] and len(Ks) > 1 for K in Ks}
    need = {K: READY_CLOSED[1] if last[K] else READY_CLOSED[0] for K in Ks}
    short = {K: f"K={K}: {100 * closed[K]:.1f}% < {100 * t:.0f}%" for K, t in need.items() if not closed[K] >= t}
    held = {K: v for K, v in (metric_closed or {}).items() if v[0] is not None}
    missed = {}
    for K, (g, se) in held.items():
        target = READY_METRIC[1] if last[K] else READY_METRIC[0]
        if not g - (se or 0.0) >= target:
            missed[K] = f"K={K}: {100 * g:.1f}% ± {100 * (se or 0.0):.1f}% vs {100 * target:.0f}%"
    advice = _smaller_K_advice(Ks, set(short) | set(missed)) if short or missed else ""
    if short:
        near = all(closed[K] >= NEAR_CLOSED for K in Ks)  # NaN compares False: not near
        how_far = ("its samples are near exact sampling but may still miss on a strongly coupled metric"
                   if near else "its samples will be far from exact sampling")
        return "not ready", ("ADJUST removes too little of parallel's joint KL (" + "; ".join(short.values()) +
                             f"): {how_far}. {advice}")
    kl = "ADJUST removes " + ", ".join(f"{100 * closed[K]:.0f}% at K={K}" for K in need) + " of parallel's joint KL"
    if missed:
        return "not ready", (f"{kl}, but its samples close too little of the parallel → K=1 gap in {metric} ("
                             + "; ".join(missed.values()) + f"). {advice}")
    if held:
        kl += f", and {', '.join(f'{100 * g:.0f}% of the {metric} gap at K={K}' for K, (g, _) in held.items())}"
    return "ready", kl + "."


def _smaller_K_advice(Ks: list[int], failed: set[int]) -> str:
    """What to do about a not-ready readout: where every K below the first failing one passed, that
    they can be served (a sampler trained with R = 3 often holds at K ≤ 4 and not at K = 8, whose
    passes past R are never trained); otherwise train more."""
    more = "train longer (a larger --budget) or on more trajectories"
    safe = [K for K in Ks if K < min(failed)]
    if not safe:
        return f"Use a smaller K, or {more}."
    return f"It passes at K ≤ {safe[-1]}: serve K ≤ {safe[-1]}, or {more}."


PLATEAU_SHARE = 0.9  # a held-out KL at ≥ 90% of parallel's: g is still about the parallel baseline


def plateau_evaluations(log_records: list[dict]) -> int:
    """How many of a run's first evaluations (``train_log.jsonl`` records) had a held-out KL of at
    least `PLATEAU_SHARE` of parallel's: the steps it spent on the parallel plateau, in evaluations."""
    n = 0
    for rec in log_records:
        if "heldout_kl" not in rec:
            continue
        if rec["heldout_kl"] < PLATEAU_SHARE * rec["parallel_kl"]:
            break
        n += 1
    return n


class ReadinessProbe:
    """Runs the readout for a sampler on held-out trajectories (one object per training run).

    Args:
        adapter: the base model.
        traj: the trajectories; `rows` selects the held-out ones whose prompts are used.
        rollout: R of the run: the readout uses K = 2, R + 1 and 2(R + 1) (K = 2 leans on the
            first pass after each base forward alone; it was the weakest K on the testbeds of
            docs/training.md).
        num_prompts: prompts generated per K (cycled over the held-out rows).
        testbed: the base's built-in testbed, for its scorer (None, or no per-sample scorer: joint KL only).
        batch_size: rows per generate call.
        folder: where parallel's readout is kept (`PARALLEL_NAME`) and read back by a later probe of
            the same base, prompts and settings; None (or a base or data without a fingerprint) =
            measured by every probe.
    """

    def __init__(self, adapter: DiffusionLMAdapter, traj: Trajectories, rows: torch.Tensor, rollout: int,
                 num_prompts: int = 256, testbed=None, batch_size: int = 256, folder: str | Path | None = None):
        s = traj.settings
        self.adapter = adapter
        known = adapter.info.fingerprint is not None and traj.fingerprint is not None  # else nothing names them
        self.path = Path(folder) / PARALLEL_NAME if folder is not None and known else None
        self.Ks = readout_Ks(rollout)
        self.settings = SamplingSettings(temperature=s["temperature"], top_p=s.get("top_p"), top_k=s.get("top_k"),
                                         alg=s.get("alg", "entropy"))
        self.gen_length, self.block_length = s["gen_length"], s.get("block_length")
        self.batch_size = batch_size
        picked = [int(rows[i % len(rows)]) for i in range(num_prompts)]
        self.prompts = [trajectory_prompt(traj, r, adapter.mask_token_id) for r in picked]
        # The testbed's metric, when it scores single samples (text and user data do not).
        self.testbed, self.metric, self.exact_metric, self.exact_metric_se = testbed, None, None, None
        finals = [traj.input_ids[r][-self.gen_length:].tolist() for r in picked]
        if testbed is not None:
            metric = MAIN_METRIC.get(testbed.name, (None, True))[0]
            try:
                exact = self._score_all(finals)
            except ValueError as e:  # e.g. `adjust data --prompts bos` on a conditional testbed's base
                exact = {}
                warnings.warn(f"readiness readout: the trajectories' prompts are not {testbed.name} prompts ({e}), "
                              f"so the readout has no {metric} scores, only the joint KL (make the data with "
                              f"`adjust data --prompts testbed` to have them)", stacklevel=2)
            if metric in exact:
                self.metric = metric
                self.exact_metric, self.exact_metric_se = self._mean(exact, metric)
        self._parallel: dict[int, tuple[float, tuple[float, float] | None]] | None = None  # per K, as _measure
        # What parallel's readout depends on: a kept one is read back only when all of it is the same.
        self.key = {"base": adapter.info.fingerprint, "data": traj.fingerprint, "rows": [int(r) for r in picked],
                    "Ks": list(self.Ks), "batch_size": batch_size, "metric": self.metric, "seed": READOUT_SEED}

    def _score_all(self, completions: list[list[int]]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for p, c in zip(self.prompts, completions):
            prompt = self.testbed.prompt_from_ids(p[1:]) if hasattr(self.testbed, "prompt_from_ids") else Prompt(p[1:])
            for k, v in self.testbed.score(prompt, c).items():
                out.setdefault(k, []).append(v)
        return out

    @staticmethod
    def _mean(scores: dict[str, list[float]], metric: str) -> tuple[float, float]:
        """The mean of the metric's per-sample scores and its standard error."""
        vals = torch.tensor(scores[metric], dtype=torch.float64)
        se = float(vals.std() / math.sqrt(len(vals))) if len(vals) > 1 else 0.0
        return float(vals.mean()), se

    def _measure(self, sampler, K: int) -> tuple[float, tuple[float, float] | None]:
        kl_sum, kl_n, completions = 0.0, 0, []
        for i in range(0, len(self.prompts), self.batch_size):
            out = generate(self.adapter, self.prompts[i : i + self.batch_size], K=K, sampler=sampler,
                           max_new_tokens=self.gen_length, block_length=self.block_length,
                           temperature=self.settings.temperature, top_p=self.settings.top_p,
                           top_k=self.settings.top_k, alg=self.settings.alg, seed=READOUT_SEED + i,
                           return_history=True)
            kl = per_step_joint_kl(self.adapter, out, self.settings, first_exact=True)  # plain generate, as vouched
            kl_sum += kl["joint_kl"] * kl["joint_kl_tokens"]
            kl_n += kl["joint_kl_tokens"]
            completions += out.completions.tolist()
        metric = self._mean(self._score_all(completions), self.metric) if self.metric is not None else None
        return kl_sum / max(kl_n, 1), metric

    def _kept_parallel(self) -> dict[int, tuple[float, tuple[float, float] | None]] | None:
        """Parallel's readout kept in the folder for this probe's key, or None."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            kept = json.loads(self.path.read_text())
            if kept.get("key") != self.key:
                return None
            return {int(K): (float(kl), None if metric is None else tuple(metric))
                    for K, (kl, metric) in kept["parallel"].items()}
        except (ValueError, TypeError, KeyError, AttributeError):  # unreadable: measured again, and rewritten
            return None

    def _keep_parallel(self, parallel: dict) -> dict:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps({"key": self.key, "parallel": {str(K): list(v) for K, v in parallel.items()}},
                                             indent=1) + "\n")
        return parallel

    @torch.no_grad()
    def __call__(self, sampler, step: int) -> Readout:
        """Measure `sampler` (put in eval mode for the call) at both K."""
        if self._parallel is None:
            self._parallel = self._kept_parallel() or self._keep_parallel({K: self._measure(None, K) for K in self.Ks})
        was_training = sampler.training
        sampler.eval()
        try:
            adj = {K: self._measure(sampler, K) for K in self.Ks}
        finally:
            sampler.train(was_training)
        par, scored = self._parallel, self.metric is not None

        def part(runs: dict, i: int) -> dict[int, float] | None:  # i = 0: the mean, 1: its standard error
            return {K: v[1][i] for K, v in runs.items()} if scored else None

        return Readout(step=step, Ks=self.Ks, adjust_kl={K: v[0] for K, v in adj.items()},
                       parallel_kl={K: v[0] for K, v in par.items()}, metric=self.metric,
                       adjust_metric=part(adj, 0), parallel_metric=part(par, 0), exact_metric=self.exact_metric,
                       adjust_metric_se=part(adj, 1), parallel_metric_se=part(par, 1),
                       exact_metric_se=self.exact_metric_se)
