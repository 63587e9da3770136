"""What one readiness readout costs on CPU, by part: ADJUST generation and the joint KL's base forwards.

    python -m benchmarks.readout_cost --base text --sampler text --data runs/traj-text [--threads 1]

For each readout K (2, R + 1, 2(R + 1)), on the readout's own held-out prompts (`ReadinessProbe`, 256 of
them): the seconds of `generate` and of `per_step_joint_kl` on its output, computed in full and with
``first_exact`` (each base step's first commit, whose log ratio is 0, without its base forward), and
the two KLs (they must agree). Medians of ``--repeats`` after one warm-up. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--sampler", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import adjust
    from adjust.eval.joint_kl import per_step_joint_kl
    from adjust.models.adapter import as_adapter
    from adjust.train.readiness import READOUT_SEED, ReadinessProbe
    from adjust.train.trajectories import load_trajectories

    model = adjust.MaskedDiffusionLM.from_pretrained(args.base)
    sampler = adjust.AdjustSampler.from_pretrained(args.sampler)
    traj = load_trajectories(args.data)
    n_held = max(1, int(len(traj) * 0.05))  # SamplerTrainConfig.heldout_fraction's rows
    probe = ReadinessProbe(as_adapter(model), traj, torch.arange(len(traj) - n_held, len(traj)),
                           int(sampler.extra.get("rollout", 3)))
    s = probe.settings
    out_rec = {"base": args.base, "sampler": args.sampler, "threads": args.threads, "prompts": len(probe.prompts)}
    for K in probe.Ks:
        times: dict[str, list[float]] = {"generate": [], "kl_full": [], "kl_first_exact": []}
        kls = {}
        for rep in range(args.repeats + 1):
            t = time.perf_counter()
            out = adjust.generate(model, probe.prompts, K=K, sampler=sampler, max_new_tokens=probe.gen_length,
                                  block_length=probe.block_length, temperature=s.temperature, top_p=s.top_p,
                                  top_k=s.top_k, alg=s.alg, seed=READOUT_SEED, return_history=True)
            gen = time.perf_counter() - t
            for name, first_exact in (("kl_full", False), ("kl_first_exact", True)):
                t = time.perf_counter()
                kls[name] = per_step_joint_kl(model, out, s, first_exact=first_exact)["joint_kl"]
                if rep:
                    times[name].append(time.perf_counter() - t)
            if rep:  # the first round is the warm-up
                times["generate"].append(gen)
        out_rec[f"K{K}"] = {**{k: round(statistics.median(v), 2) for k, v in times.items()},
                            **{f"joint_kl_{k[3:]}": round(v, 6) for k, v in kls.items()}}
    print(json.dumps(out_rec))


if __name__ == "__main__":
    main()
