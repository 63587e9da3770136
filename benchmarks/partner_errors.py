"""Where ADJUST breaks a palindrome (the `mirror` testbed): per base forward and sampler pass, how
often a token committed at a position whose partner (L − 1 − i) is already known disagrees with it.

    python -m benchmarks.partner_errors --base runs/base-mirror --sampler runs/sampler-mirror --K 2
    python -m benchmarks.partner_errors --base runs/base-mirror --sampler runs/sampler-mirror \
        --data runs/traj-mirror --after 2      # teacher-forced, on the training trajectories

Prints one line per (base forward, pass) with the commits whose partner was known, the mismatches,
and the positions the mismatches were committed at (docs/training.md, "Where the recipe misses").
With --data: from each trajectory's state after `--after` commits, the base forward, the next
commit of the trajectory, one sampler pass; the mean probability the pass puts on the right
partner of that commit, by the commit's position.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch


def partner_errors(base: str, sampler: str, K: int, n: int,
                   seed: int) -> dict[tuple[int, int], tuple[int, int, Counter]]:
    """{(base forward, pass): (commits with a known partner, mismatches, mismatched positions)}."""
    import adjust

    model = adjust.MaskedDiffusionLM.from_pretrained(base)
    L = model.config.extra["gen_length"]
    out = adjust.generate(model, batch_size=n, K=K, sampler=adjust.AdjustSampler.from_pretrained(sampler),
                          max_new_tokens=L, seed=seed, return_history=True)
    P = out.prompt_length
    seen = torch.full((n, L), -1, dtype=torch.long)
    stats: dict[tuple[int, int], tuple[int, int, Counter]] = {}
    for rec in out.history:
        key = (rec.base_forward, rec.pass_index)
        known, bad, where = stats.get(key, (0, 0, Counter()))
        for b in range(n):
            for p, t in zip(rec.positions[b], rec.tokens[b]):
                i = p - P
                if seen[b, L - 1 - i] >= 0:
                    known += 1
                    if seen[b, L - 1 - i] != t:
                        bad += 1
                        where[i] += 1
                seen[b, i] = t
        stats[key] = (known, bad, where)
    return stats


def teacher_forced_partner(base: str, sampler: str, data: str, after: int, n: int) -> dict[int, tuple[int, float]]:
    """{position of the trajectory's next commit: (trajectories, mean p(right partner) after one pass)}."""
    import adjust
    from adjust.models.adapter import as_adapter
    from adjust.train.trajectories import load_trajectories

    model = adjust.MaskedDiffusionLM.from_pretrained(base)
    ad, g = as_adapter(model), adjust.AdjustSampler.from_pretrained(sampler).eval()
    traj, L = load_trajectories(data), model.config.extra["gen_length"]
    probs: dict[int, list[float]] = {}
    with torch.no_grad():
        for r in range(min(n, len(traj))):
            ids, rank = traj.input_ids[r], traj.rank[r]
            P = ids.shape[0] - L
            i = int((rank[P:] == after).nonzero()[0]) if bool((rank[P:] == after).any()) else None
            if i is None:
                continue
            before = torch.where(rank >= after, ad.mask_token_id, ids)[None]
            committed = torch.where(rank >= after + 1, ad.mask_token_id, ids)[None]
            h = g(ad.hidden(before, None), committed, ad, None)
            p = torch.softmax(ad.logits(h)[0, P + L - 1 - i].float(), -1)
            probs.setdefault(i, []).append(float(p[ids[i + P]]))
    return {i: (len(v), sum(v) / len(v)) for i, v in sorted(probs.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--sampler", required=True)
    ap.add_argument("--K", type=int, default=2)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--data", help="trajectories: the teacher-forced check instead of generation")
    ap.add_argument("--after", type=int, default=2, help="--data: commits before the base forward")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.data:
        for i, (count, p) in teacher_forced_partner(args.base, args.sampler, args.data, args.after, args.n).items():
            print(f"next commit at {i}: {count} trajectories, mean p(right partner) after one pass {p:.3f}")
        return
    for (step, pass_index), (known, bad, where) in sorted(partner_errors(args.base, args.sampler, args.K, args.n,
                                                                         args.seed).items()):
        if known:
            print(f"base forward {step} pass {pass_index}: {known} commits with a known partner, {bad} wrong "
                  f"(at positions {dict(sorted(where.items()))})")


if __name__ == "__main__":
    main()
