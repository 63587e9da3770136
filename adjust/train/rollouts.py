"""The states a sampler is trained on: x_t and the R states that follow it.

- **teacher-forced** (the paper's Alg. 2): x_{t+1..t+R} are the next states of the K = 1
  trajectory — the positions and tokens the base model itself chose.
- **on-policy** (DAgger-style): from the same x_t, the first token is chosen and sampled
  from the base logits (as at generation), and every later one from the sampler's own
  updated logits, with the trajectory's sampling settings. These are the states ADJUST
  reaches at generation time; training on them (with the base's targets computed on
  them) teaches the sampler to recover from its own choices instead of only the base's.

Both return ids [R + 1, B, T] (left-padded like the trajectories) for the loss.
"""

from __future__ import annotations

import torch

from adjust.models.adapter import DiffusionLMAdapter
from adjust.generate import generate
from adjust.train.trajectories import Trajectories, trajectory_prompt, unmask_ranks
from adjust.unmasking import SamplingSettings, sample_tokens, select_positions


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


def block_candidates(x: torch.Tensor, attn: torch.Tensor, mask_id: int, gen_length: int,
                     block_length: int | None) -> torch.Tensor:
    """Masked positions of x [B, T] that generation may commit now: all of them, or, in semi-AR
    mode, those before the end of the block holding the first masked generated position
    (the generated region is the last `gen_length` positions; masks in the prompt are
    candidates from the first block on, as in `generate`)."""
    masked = (x == mask_id) & attn.bool()
    if block_length is None:
        return masked
    T = x.shape[1]
    pos = torch.arange(T, device=x.device)
    start = T - gen_length
    first = torch.where(masked & (pos >= start), pos, T).min(-1).values
    end = start + ((first - start) // block_length + 1) * block_length
    return masked & (pos[None] < end[:, None])


@torch.no_grad()
def policy_states(
    sampler, adapter: DiffusionLMAdapter, x0: torch.Tensor, attn: torch.Tensor, rollout: int,
    settings: SamplingSettings, generator: torch.Generator, gen_length: int, block_length: int | None = None,
) -> torch.Tensor:
    """On-policy states [R+1, B, T] from x0 [B, T]: one commit per pass, pass 0 from the base logits,
    pass j ≥ 1 from g's (the ADJUST step of `generate`, one position per pass)."""
    attn_arg = None if bool(attn.all()) else attn
    was_training = sampler.training
    sampler.eval()
    x = x0.to(adapter.device)
    h = adapter.hidden(x, attn_arg)
    states = [x]
    for j in range(rollout):
        if j > 0:
            h = sampler(h, x, adapter, attn_arg)
        cand = block_candidates(x, attn, adapter.mask_token_id, gen_length, block_length)
        if bool(cand.any()):
            tokens, scores, _ = sample_tokens(adapter.logits(h[cand]), settings, adapter.mask_token_id, generator)
            full = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
            full[cand] = scores
            proposal = x.clone()
            proposal[cand] = tokens
            commit = select_positions(full, cand, cand.any(-1).long(), settings.alg_temp, generator)
            x = torch.where(commit, proposal, x)
        states.append(x)
    sampler.train(was_training)
    return torch.stack(states)


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
