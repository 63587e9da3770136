"""The states a sampler is trained on: x_t and the R states that follow it.

- **teacher-forced** (the paper's Alg. 2): x_{t+1..t+R} are the next states of the K = 1
  trajectory — the positions and tokens the base model itself chose.
- **self-generated** (DAgger-style, `--on-policy`): a pool of ADJUST's own generations with
  the current sampler, read as trajectories (the order it committed in); its states are
  the ones ADJUST reaches at generation time, and the base's targets computed on them teach
  the sampler to recover from its own choices instead of only the base's.

Both give ids [R + 1, B, T] (left-padded like the trajectories) for the loss.
"""

from __future__ import annotations

import torch

from adjust.models.adapter import DiffusionLMAdapter
from adjust.generate import generate
from adjust.train.trajectories import Trajectories, trajectory_prompt, unmask_ranks


def rollout_states(
    traj: Trajectories, rows: list[int], ts: list[int], rollout: int, mask_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced states x_t .. x_{t+R} of each (row, t): ids [R+1, B, T] and attention mask [B, T]."""
    width = max(traj.input_ids[r].shape[0] for r in rows)
    xs = torch.full((rollout + 1, len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (r, t) in enumerate(zip(rows, ts)):
        ids, rank, n = traj.input_ids[r], traj.rank[r], traj.input_ids[r].shape[0]
        attn[b, width - n :] = traj.attention_mask[r]
        for j in range(rollout + 1):
            xs[j, b, width - n :] = torch.where(rank >= t + j, mask_id, ids)
    return xs, attn


@torch.no_grad()
def self_generated(
    sampler, adapter: DiffusionLMAdapter, traj: Trajectories, rows: list[int], Ks: tuple[int, ...], seed: int,
    batch_size: int = 256,
) -> Trajectories:
    """ADJUST's own trajectories: the prompts of `rows` generated with `sampler` at each K of `Ks`
    (in turn), stored like K = 1 trajectories (the rank of a position = the pass that committed it),
    so that their windows are the states ADJUST reaches at generation time, start states included."""
    s = traj.settings
    was_training = sampler.training
    sampler.eval()
    ids, masks, ranks = [], [], []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        out = generate(adapter, [trajectory_prompt(traj, r, adapter.mask_token_id) for r in chunk],
                       K=Ks[(i // batch_size) % len(Ks)], sampler=sampler, max_new_tokens=s["gen_length"],
                       block_length=s.get("block_length"), temperature=s["temperature"], top_p=s.get("top_p"),
                       top_k=s.get("top_k"), alg=s.get("alg", "entropy"), seed=seed + i)
        rank = unmask_ranks(out.commit_pass)
        for b in range(len(chunk)):
            ids.append(out.sequences[b].cpu())
            masks.append(out.attention_mask[b].cpu())
            ranks.append(rank[b].cpu())
    sampler.train(was_training)
    return Trajectories(ids, masks, ranks, dict(s))
