"""The sampler-recipe sweep of docs/training.md: train one sampler, then measure what it generates.

One run = `train_sampler` on a base and its K = 1 trajectories with the settings given as JSON
(fields of `adjust.train.config.SamplerTrainConfig`), then ADJUST generation at K = 2, 4, 8 on
the testbed's evaluation prompts, scored with the testbed's exact metric (T = 1). Each run
appends one JSON line (settings, train seconds and CPU seconds, the final readout, the measured
metric) to `--results`; `--table` prints those lines as the markdown table of the docs.

    python -m benchmarks.recipe_sweep --base runs/base-mirror --data runs/traj-mirror \\
        --name mirror-lr3 --cfg '{"budget": 400000, "lr": 3e-3}' --threads 1
    python -m benchmarks.recipe_sweep --table --results runs/sweep/results.jsonl
    python -m benchmarks.recipe_sweep --baselines --base tasks --n 334 --seeds 3   # K=1 and parallel, same prompts
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch


def run(args) -> dict:
    import adjust
    from adjust.data import get_testbed
    from adjust.eval.run import MAIN_METRIC
    from adjust.train.config import SamplerTrainConfig
    from adjust.train.sampler import train_sampler
    from adjust.train.trajectories import load_trajectories

    model = adjust.MaskedDiffusionLM.from_pretrained(args.base)
    name = model.config.extra["testbed"]
    testbed = get_testbed(name)
    cfg = SamplerTrainConfig(**json.loads(args.cfg))
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
    sampler = train_sampler(model, load_trajectories(args.data), Path(args.out) / args.name, cfg, progress=False,
                            testbed=testbed)
    seconds, cpu = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_utime - c0
    metric = MAIN_METRIC[name][0]
    measured = {K: _measure(model, testbed, sampler, K, args.n, args.seeds, metric) for K in (2, 4, 8)}
    return {"name": args.name, "testbed": name, "cfg": json.loads(args.cfg), "resolved": vars(cfg.resolved()),
            "train_s": round(seconds, 1), "train_cpu_s": round(cpu, 1), "metric": metric, "adjust": measured,
            "readiness": sampler.extra.get("readiness"), "heldout_kl": sampler.extra.get("heldout_kl"),
            "parallel_kl": sampler.extra.get("parallel_kl")}


def _measure(model, testbed, sampler, K: int, n: int, seeds: int, metric: str) -> float:
    """The metric's mean over ``seeds`` × ``n`` generations at K (T = 1) on the sweep's evaluation prompts."""
    import adjust

    vals = []
    for seed in range(seeds):
        prompts = testbed.prompts(n, seed=1_000_000 + seed)
        out = adjust.generate(model, [[model.config.bos_token_id] + p.ids for p in prompts], K=K, sampler=sampler,
                              max_new_tokens=testbed.gen_length, temperature=1.0, seed=seed * 7919 + 17)
        rows = out.completions.tolist()
        vals.append(statistics.fmean(testbed.score(p, r)[metric] for p, r in zip(prompts, rows)))
    return statistics.fmean(vals)


def baselines(args) -> dict:
    """K = 1 and parallel K = 2, 4, 8 on the same prompts and seeds as `run`'s ADJUST: the ends of the gap."""
    import adjust
    from adjust.data import get_testbed
    from adjust.eval.run import MAIN_METRIC

    model = adjust.MaskedDiffusionLM.from_pretrained(args.base)
    name = model.config.extra["testbed"]
    testbed, metric = get_testbed(name), MAIN_METRIC[name][0]
    return {"base": args.base, "testbed": name, "metric": metric, "n": args.n, "seeds": args.seeds,
            **{f"K{K}": _measure(model, testbed, None, K, args.n, args.seeds, metric) for K in (1, 2, 4, 8)}}


def table(path: str) -> str:
    """The results file as markdown: one row per run, readout beside the measured metric."""
    head = ("| run | testbed | settings | train min | held-out KL (parallel) "
            "| readout: joint KL closed K=2 / 4 / 8 (older runs: K=4 / 8) | ADJUST metric K=2 / 4 / 8 |")
    lines = [head, "|" + "---|" * 7]
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        rd = r["readiness"] or {}
        closed = " / ".join(f"{100 * rd[k]['closed']:.0f}%" for k in ("K2", "K4", "K8") if k in rd) or "–"
        got = " / ".join(f"{r['adjust'][k]:.3f}" for k in ("2", "4", "8"))
        probe = f", {r['probe']}" if "probe" in r else ""  # a run of another harness (its command)
        lines.append(f"| {r['name']} | {r['testbed']} | `{json.dumps(r['cfg'])}`{probe} | {r['train_s'] / 60:.0f} | "
                     f"{r['heldout_kl']} ({r['parallel_kl']}) | {closed} | {r['metric']} {got} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base"), ap.add_argument("--data"), ap.add_argument("--name")
    ap.add_argument("--cfg", default="{}", help="SamplerTrainConfig fields as JSON")
    ap.add_argument("--out", default="runs/sweep", help="folder of the runs' samplers")
    ap.add_argument("--results", default="runs/sweep/results.jsonl")
    ap.add_argument("--n", type=int, default=1000, help="samples per K and seed")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print the results file as a markdown table")
    ap.add_argument("--baselines", action="store_true",
                    help="measure K = 1 and parallel K = 2, 4, 8 of --base on the same prompts (no training)")
    args = ap.parse_args()
    if args.table:
        print(table(args.results))
        return
    if args.baselines:
        torch.set_num_threads(args.threads)
        print(json.dumps(baselines(args)))
        return
    torch.set_num_threads(args.threads)
    rec = run(args)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
