"""Where a sampler's first pass misses, by how many positions are still masked (teacher-forced).

    python -m benchmarks.kl_by_masks_left --base runs/base-dyck --sampler runs/sampler-dyck --data runs/traj-dyck
    python -m benchmarks.kl_by_masks_left --base runs/base-dyck --sampler runs/sampler-dyck --K 2,4,8 --n 256

From `--n` trajectories drawn at random (seed 1), at every start state x_t of the trajectory: the base
forward on x_t, the trajectory's next commit, one sampler pass. For the resulting state, grouped by the
positions still masked in it: KL(p ‖ q) and KL(q ‖ p) at the position the entropy rule would commit next
(the lowest entropy of q, as ADJUST's pass picks it), the mean KL(p ‖ q) over every masked position (what
one pass adds to the training loss per position), and the entropy of p at the picked position. Prints one
line per count (docs/training.md, "The sweep": where the KL sits).

With --K instead of --data: `--n` ADJUST generations (T = 1, seed 0) per K, and the per-token joint KL
against exact sampling (`adjust.eval.joint_kl`'s estimate, log q − log p* of each committed token) split
by the positions masked before that token's commit.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch


@torch.no_grad()
def kl_by_masks_left(base: str, sampler: str, data: str, n: int) -> dict[int, dict[str, float]]:
    """{masked positions left: {"fwd", "rev", "mean_fwd", "entropy", "n"}} over `n` trajectories."""
    import adjust
    from adjust.models.adapter import as_adapter
    from adjust.train.rollouts import rollout_states
    from adjust.train.trajectories import load_trajectories

    model = adjust.MaskedDiffusionLM.from_pretrained(base)
    g = adjust.AdjustSampler.from_pretrained(sampler).eval()
    traj, ad = load_trajectories(data), as_adapter(model)
    rows = torch.randint(len(traj), (n,), generator=torch.Generator().manual_seed(1)).tolist()
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for t in range(int(traj.num_steps.max()) - 1):
        xs, attn = rollout_states(traj, rows, [t] * n, 1, ad.mask_token_id, ad.pad_token_id)
        a = None if bool(attn.all()) else attn
        h = g(ad.hidden(xs[0], a), g.input_tokens(xs[1], xs[0], ad.mask_token_id), ad, a)
        lp = torch.log_softmax(ad.logits(ad.hidden(xs[1], a)).float(), -1)
        lq = torch.log_softmax(ad.logits(h).float(), -1)
        m = (xs[1] == ad.mask_token_id) & attn.bool()
        entropy_q = (-(lq.exp() * lq).sum(-1)).masked_fill(~m, float("inf"))
        fwd_all = (lp.exp() * (lp - lq)).sum(-1)
        for b, pos in enumerate(entropy_q.argmin(1).tolist()):
            if not m[b].any():  # a shorter trajectory, already complete at t + 1
                continue
            p, q, s = lp[b, pos], lq[b, pos], sums[int(m[b].sum())]
            s["fwd"] += float((p.exp() * (p - q)).sum())
            s["rev"] += float((q.exp() * (q - p)).sum())
            s["mean_fwd"] += float(fwd_all[b][m[b]].mean())
            s["entropy"] += float(-(p.exp() * p).sum())
            s["n"] += 1
    return {k: {f: (v if f == "n" else v / s["n"]) for f, v in s.items()} for k, s in sorted(sums.items())}


@torch.no_grad()
def joint_kl_by_masks_left(base: str, sampler: str, K: int, n: int,
                           gen_length: int | None = None) -> dict[int, tuple[float, int]]:
    """{masked positions before the commit: (mean log q − log p* of those commits, commits)} of `n` generations
    of `gen_length` tokens (default: the testbed base's)."""
    import adjust
    from adjust.eval.joint_kl import commit_log_ratios
    from adjust.unmasking import SamplingSettings

    model = adjust.MaskedDiffusionLM.from_pretrained(base)
    out = adjust.generate(model, K=K, sampler=adjust.AdjustSampler.from_pretrained(sampler), batch_size=n,
                          max_new_tokens=gen_length or model.config.extra["gen_length"], seed=0, return_history=True)
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for left, log_ratio in commit_log_ratios(model, out, SamplingSettings(temperature=1.0)):
        for k, v in zip(left.tolist(), log_ratio.tolist()):
            sums[k][0] += v
            sums[k][1] += 1
    return {k: (v / c, c) for k, (v, c) in sorted(sums.items())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--sampler", required=True)
    ap.add_argument("--data", help="a trajectory folder of the base (`adjust data`): teacher-forced states")
    ap.add_argument("--K", help="comma-separated Ks: ADJUST's own generations instead of --data")
    ap.add_argument("--n", type=int, default=600, help="trajectories drawn, or generations per K (default 600)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if (args.data is None) == (args.K is None):
        ap.error("give one of --data (teacher-forced) and --K (generation)")
    torch.set_num_threads(args.threads)
    if args.K is not None:
        for K in (int(k) for k in args.K.split(",")):
            split = joint_kl_by_masks_left(args.base, args.sampler, K, args.n)
            print(f"K = {K}, joint KL per token by masked positions before the commit: "
                  + "  ".join(f"{k}: {v:.3f}" for k, (v, c) in split.items()))
        return
    print("masked left | KL(p||q) at the pick | KL(q||p) at the pick | mean KL(p||q) over masked | H(p) at the pick | states")
    for left, s in kl_by_masks_left(args.base, args.sampler, args.data, args.n).items():
        print(f"{left:11d} | {s['fwd']:20.4f} | {s['rev']:20.4f} | {s['mean_fwd']:25.4f} | {s['entropy']:16.3f} | {int(s['n'])}")


if __name__ == "__main__":
    main()
