"""Train an ADJUST sampler on K = 1 trajectories (paper §3.3, Alg. 2).

One example: a trajectory, a step t, and the next R states x_{t+1..t+R} (R = rollout,
K − 1 at inference). Targets p_j = softmax(W f(x_{t+j})) come from the frozen base;
the sampler is unrolled with teacher forcing, ĥ_0 = f(x_t), ĥ_j = g(ĥ_{j−1}, x_{t+j}),
q_j = softmax(W ĥ_j), and the loss is Σ_j mean over the positions still masked in
x_{t+j} of KL(p_j ‖ q_j) (forward KL, the paper's objective). The mask token is
excluded from both distributions, as it is at sampling time.

The *parallel baseline* of the same loss (q_j = softmax(W f(x_t)), i.e. an
untrained sampler) is logged beside it: a sampler is only worth shipping once its
held-out KL is far below that (an under-trained sampler is worse than parallel).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from adjust.identity import check_base
from adjust.jobstate import Job
from adjust.models.adapter import DiffusionLMAdapter, as_adapter
from adjust.sampler import AdjustSampler
from adjust.train.checkpointing import GracefulStop, load_state, save_state
from adjust.train.distributed import Rank
from adjust.train.schedule import warmup_cosine
from adjust.train.trajectories import Trajectories

NEG = -1e4  # "log 0" that keeps 0 · (log p − log q) finite


@dataclass
class SamplerTrainConfig:
    rollout: int = 3
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 50
    heldout_fraction: float = 0.05
    heldout_examples: int = 256
    eval_every: int = 250
    seed: int = 0


def rollout_states(
    traj: Trajectories, rows: list[int], ts: list[int], rollout: int, mask_id: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """States x_t .. x_{t+R} of each (row, t): ids [R+1, B, T] and attention mask [B, T] (left-padded)."""
    width = max(traj.input_ids[r].shape[0] for r in rows)
    xs = torch.full((rollout + 1, len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (r, t) in enumerate(zip(rows, ts)):
        ids, rank, n = traj.input_ids[r], traj.rank[r], traj.input_ids[r].shape[0]
        attn[b, width - n :] = traj.attention_mask[r]
        for j in range(rollout + 1):
            xs[j, b, width - n :] = torch.where(rank >= t + j, mask_id, ids)
    return xs, attn


def _masked_log_probs(adapter: DiffusionLMAdapter, h: torch.Tensor) -> torch.Tensor:
    logits = adapter.logits(h).float()
    logits[..., adapter.mask_token_id] = NEG
    return F.log_softmax(logits, dim=-1)


def rollout_kl(
    sampler: AdjustSampler, adapter: DiffusionLMAdapter, xs: torch.Tensor, attn: torch.Tensor,
    rank: Rank | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_j KL(p_j ‖ q_j) of the sampler, the same sum for the parallel baseline q = p(x_t)).

    Each j's KL is a mean over the positions still masked in x_{t+j}. With the `rank`
    of a data-parallel run those counts are all-reduced first, so each rank's loss is
    its share of the global batch's and the ranks' summed gradients are the batch's.
    """
    R1, B, T = xs.shape
    attn_arg = None if bool(attn.all()) else attn
    masks = (xs[1:] == adapter.mask_token_id) & attn.bool()
    counts = masks.flatten(1).sum(-1)
    if rank is not None:
        rank.sum_(counts)
    with torch.no_grad():
        H = adapter.hidden(xs.reshape(R1 * B, T), None if attn_arg is None else attn.repeat(R1, 1))
        H = H.reshape(R1, B, T, -1)
    h = H[0]
    loss = torch.zeros((), device=H.device)
    base = torch.zeros((), device=H.device)
    for j in range(1, R1):
        h = sampler(h, xs[j], adapter, attn_arg)
        m = masks[j - 1]
        if not bool(m.any()):
            continue
        with torch.no_grad():
            logp = _masked_log_probs(adapter, H[j][m])
            logp0 = _masked_log_probs(adapter, H[0][m])
        logq = _masked_log_probs(adapter, h[m])
        p = logp.exp()
        loss = loss + (p * (logp - logq)).sum() / counts[j - 1]
        base = base + (p * (logp - logp0)).sum() / counts[j - 1]
    return loss, base


def _draw(traj: Trajectories, rows: torch.Tensor, rollout: int, g: torch.Generator, n: int) -> tuple[list, list]:
    """n (row, t) pairs: t uniform over the steps that leave x_{t+R} (or the last state) still masked."""
    steps = traj.num_steps[rows]
    rows = rows[steps > 1]
    if len(rows) == 0:
        raise ValueError("data: no trajectory has two or more unmasking steps")
    picked = rows[torch.randint(len(rows), (n,), generator=g)]
    hi = (traj.num_steps[picked] - rollout).clamp(min=1)
    ts = (torch.rand(n, generator=g) * hi).long().clamp(max=hi - 1)
    return picked.tolist(), ts.tolist()


def train_sampler(
    model,
    traj: Trajectories,
    out_dir: str | Path,
    cfg: SamplerTrainConfig | None = None,
    progress: bool = True,
    provenance: dict | None = None,
    stop_after: int | None = None,
    rank: Rank | None = None,
    allow_base_mismatch: bool = False,
) -> AdjustSampler:
    """Train (or resume training) a sampler for `model` and save it to `out_dir`.

    A `train_state.pt` in `out_dir` is resumed from (same settings required): the
    sampler, optimizer and data-order RNG continue exactly where they stopped.
    SIGTERM/SIGINT end the run after the current step with a checkpoint;
    `stop_after` does the same after that many steps, as a scheduler's limit would.
    `rank` (from `Rank.from_env()` under torchrun) splits each batch over the ranks
    (see `adjust.train.distributed`); rank 0 alone writes the log and checkpoints,
    and every rank resumes from them, so `out_dir` must be on a shared filesystem.
    On CUDA the forward passes run under bf16 autocast (KLs in fp32).
    Identity (`adjust.jobstate`): `traj` must come from `model` (by weight fingerprint,
    unless `allow_base_mismatch`: the same base re-saved), a resumed run must have the
    same base, data and settings; a larger `cfg.steps` extends a complete run. A stop
    signal raises `adjust.jobstate.JobInterrupted` after the checkpoint.
    """
    cfg = cfg or SamplerTrainConfig()
    rank = rank or Rank()
    if cfg.rollout < 1 or cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"rollout, steps and batch_size must be ≥ 1, got {cfg.rollout}, {cfg.steps}, {cfg.batch_size}")
    if cfg.batch_size < rank.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is smaller than the {rank.world_size} ranks it is split over")
    adapter = as_adapter(model)
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    out = Path(out_dir)
    check_base(traj.base, adapter.info, "data", allow_base_mismatch)
    inputs = {"base": asdict(adapter.info), "data": traj.fingerprint,
              "train": {k: v for k, v in asdict(cfg).items() if k != "steps"}}
    job = Job.begin(out, "train-sampler", inputs, cfg.steps, writer=rank.is_main, allow_base_mismatch=allow_base_mismatch)
    n_held = max(1, int(len(traj) * cfg.heldout_fraction))
    if len(traj) <= n_held:
        raise ValueError(f"data: {len(traj)} trajectories are too few to hold out {n_held} for validation")
    train_rows, held_rows = torch.arange(len(traj) - n_held), torch.arange(len(traj) - n_held, len(traj))
    pad = adapter.pad_token_id if adapter.pad_token_id is not None else 0
    held = _draw(traj, held_rows, cfg.rollout, torch.Generator().manual_seed(cfg.seed + 1), cfg.heldout_examples)
    held_batches = [] if not rank.is_main else [  # only rank 0 evaluates
        rollout_states(traj, held[0][i : i + cfg.batch_size], held[1][i : i + cfg.batch_size], cfg.rollout,
                       adapter.mask_token_id, pad)
        for i in range(0, cfg.heldout_examples, cfg.batch_size)
    ]

    sampler = AdjustSampler.from_base(adapter, extra={"rollout": cfg.rollout, **(provenance or {})})
    sampler.data_fingerprint = traj.fingerprint
    opt = torch.optim.AdamW(sampler.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    start = 0
    state = load_state(out, cfg)
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        start = state["step"]
    log = (out / "train_log.jsonl").open("a") if rank.is_main else None
    if start == 0 and log is not None:
        log.write(json.dumps({"event": "start", "train": asdict(cfg), "params": sampler.num_parameters(),
                              "trajectories": len(traj)}) + "\n")

    def evaluate() -> tuple[float, float]:
        sampler.eval()
        with torch.no_grad():
            pairs = [rollout_kl(sampler, adapter, xs.to(adapter.device), a.to(adapter.device))
                     for xs, a in held_batches]
        sampler.train()
        return (sum(p[0].item() for p in pairs) / len(pairs), sum(p[1].item() for p in pairs) / len(pairs))

    progress = progress and rank.is_main
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=adapter.device.type == "cuda")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-sampler", disable=not progress)
    sampler.train()
    t0, ema = time.perf_counter(), None
    with GracefulStop() as stop:
        for step in bar:
            rows, ts = _draw(traj, train_rows, cfg.rollout, g, cfg.batch_size)
            mine = slice(rank.rank, None, rank.world_size)
            xs, attn = rollout_states(traj, rows[mine], ts[mine], cfg.rollout, adapter.mask_token_id, pad)
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)
            with autocast:
                loss, _ = rollout_kl(sampler, adapter, xs.to(adapter.device), attn.to(adapter.device), rank)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
            rank.sum_grads_(sampler.parameters())
            torch.nn.utils.clip_grad_norm_(sampler.parameters(), 1.0)
            opt.step()
            value = rank.sum_(loss.detach().clone()).item()
            ema = value if ema is None else 0.98 * ema + 0.02 * value
            bar.set_postfix(kl=f"{ema:.4f}")
            stopping = rank.any(stop.requested or (stop_after is not None and step + 1 - start >= stop_after))
            if rank.is_main and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or stopping):
                held_kl, parallel_kl = evaluate()
                rec = {"step": step + 1, "train_kl": round(ema, 5), "heldout_kl": round(held_kl, 5),
                       "parallel_kl": round(parallel_kl, 5), "seconds": round(time.perf_counter() - t0, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if progress:
                    bar.write(f"step {step + 1}: train KL {ema:.4f}  held-out KL {held_kl:.4f}  "
                              f"(parallel {parallel_kl:.4f})")
                sampler.extra.update(heldout_kl=round(held_kl, 5), parallel_kl=round(parallel_kl, 5), steps=step + 1)
                sampler.save_pretrained(out)
                save_state(out, sampler=sampler.state_dict(), optimizer=opt.state_dict(), generator=g.get_state(),
                           step=step + 1, config=asdict(cfg))
                job.checkpoint(step + 1)
            if stopping:
                break
    if log is not None:
        log.close()
    rank.barrier()  # the other ranks return once rank 0's checkpoint is on disk
    job.end(stop)
    sampler.eval()
    return sampler
