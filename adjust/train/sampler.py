"""Train an ADJUST sampler on K = 1 trajectories (paper §3.3, Alg. 2).

One example: a trajectory, a step t, and the next R states x_{t+1..t+R} (R = rollout,
K − 1 at inference). Targets p_j = softmax(W f(x_{t+j})) come from the frozen base;
the sampler is unrolled with teacher forcing, ĥ_0 = f(x_t), ĥ_j = g(ĥ_{j−1}, x_{t+j}),
q_j = softmax(W ĥ_j), and the loss is Σ_j mean over the positions still masked in
x_{t+j} of KL(p_j ‖ q_j) (forward KL, the paper's objective; `SamplerTrainConfig.reverse` mixes in
the reverse KL(q_j ‖ p_j)). The mask token is
excluded from both distributions, as it is at sampling time.

The *parallel baseline* of the same loss (q_j = softmax(W f(x_t)), i.e. an
untrained sampler) is logged beside it: a sampler is only worth shipping once its
held-out KL is far below that (an under-trained sampler is worse than parallel).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from adjust.identity import check_base
from adjust.jobstate import Job
from adjust.models.adapter import DiffusionLMAdapter, as_adapter
from adjust.progress import progress_bar
from adjust.sampler import INPUTS, AdjustSampler, check_positions
from adjust.train.checkpointing import LENGTH_FIELDS, GracefulStop, load_state, save_state, setting_defaults
from adjust.train.config import CPU_PRECISIONS, KL_WEIGHTS, SamplerTrainConfig
from adjust.train.distributed import Rank
from adjust.train.readiness import ReadinessProbe, readout_Ks
from adjust.train.rollouts import rollout_states, self_generated
from adjust.train.schedule import warmup_cosine
from adjust.train.trajectories import Trajectories

NEG = -1e4  # "log 0" that keeps 0 · (log p − log q) finite
FOCUS_TEMPERATURE = 0.1  # nats: how sharply `focus` picks the positions about to be committed


def _masked_log_probs(adapter: DiffusionLMAdapter, h: torch.Tensor) -> torch.Tensor:
    logits = adapter.logits(h).float()
    logits[..., adapter.mask_token_id] = NEG
    return F.log_softmax(logits, dim=-1)


def _divergence(logp: torch.Tensor, logq: torch.Tensor, reverse: float) -> torch.Tensor:
    """Per row: (1 − r)·KL(p ‖ q) + r·KL(q ‖ p), r = `reverse` (0 = the paper's forward KL)."""
    out = (logp.exp() * (logp - logq)).sum(-1) if reverse < 1 else 0.0
    if reverse > 0:
        out = (1 - reverse) * out + reverse * (logq.exp() * (logq - logp)).sum(-1)
    return out


def rollout_kl(
    sampler: AdjustSampler, adapter: DiffusionLMAdapter, xs: torch.Tensor, attn: torch.Tensor,
    rank: Rank | None = None, focus: float = 0.0, focus_temperature: float = FOCUS_TEMPERATURE,
    reverse: float = 0.0, baseline: bool = True, skip: int = 0, per_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Σ_j KL(p_j ‖ q_j) of the sampler, the same sum for the parallel baseline q = p(x_t), or None
    without ``baseline``: a training step reads only the first, and the baseline costs one more
    LM head, log-softmax and KL per pass).

    ``xs`` [skip + R + 1, B, T]: the base forward's state x_t, then the states of every pass. With
    ``skip`` = m > 0 the first m passes run without gradient or loss (g on the teacher-forced
    tokens, as at generation) and the loss is on the R passes after them: passes m + 1 .. m + R
    of a step, which generation at K > R + 1 runs but a plain rollout never trains.
    Each j's KL is a mean over the positions still masked in x_{t+j}; with ``per_state`` a mean over
    the rows that still have one, of each row's mean over its own masked positions. With `focus` = α > 0
    a share α of it moves onto the positions the unmasking rule is about to commit: per
    row, the KLs weighted by ½·softmax(−H(p)/τ) + ½·softmax(−H(q)/τ) over its masked
    positions (the low-entropy positions of the target and of the sampler, which the
    entropy rule picks next; τ = `focus_temperature` nats), averaged over rows.
    With the `rank` of a data-parallel run the counts are all-reduced first, so each
    rank's loss is its share of the global batch's and the summed gradients are the batch's.
    """
    if not 0 <= skip < xs.shape[0] - 1:
        raise ValueError(f"skip {skip} must leave at least one pass of the {xs.shape[0] - 1} states to train")
    x_base, skipped = xs[0], xs[1 : skip + 1]
    if skip:
        xs = torch.cat([xs[:1], xs[skip + 1 :]])  # the base state, then the trained passes' states
    attn_arg = None if bool(attn.all()) else attn
    R1, B, T = xs.shape
    masks = (xs[1:] == adapter.mask_token_id) & attn.bool()
    counts = torch.cat([masks.flatten(1).sum(-1), masks.any(-1).sum(-1)])  # masked positions, active rows
    if rank is not None:
        rank.sum_(counts)
    with torch.no_grad():  # the base runs once per distinct (state, mask): windows of one trajectory overlap
        flat_x, flat_a = xs.reshape(R1 * B, T), attn.repeat(R1, 1)
        keys, inverse = torch.unique(torch.cat([flat_x, flat_a], 1), dim=0, return_inverse=True)
        ux, ua = keys[:, :T], keys[:, T:]
        H = adapter.hidden(ux, None if attn_arg is None else ua)[inverse].reshape(R1, B, T, -1)
    h = H[0]
    with torch.no_grad():  # the untrained passes move h as generation would, on the teacher-forced tokens
        for x in skipped:
            h = sampler(h, sampler.input_tokens(x, x_base, adapter.mask_token_id), adapter, attn_arg)
    loss = torch.zeros((), device=H.device)
    base = torch.zeros((), device=H.device) if baseline else None
    for j in range(1, R1):
        h = sampler(h, sampler.input_tokens(xs[j], x_base, adapter.mask_token_id), adapter, attn_arg)
        m = masks[j - 1]
        if not bool(m.any()):
            continue
        with torch.no_grad():
            logp = _masked_log_probs(adapter, H[j][m])
            if baseline:
                logp0 = _masked_log_probs(adapter, H[0][m])
                base = base + _divergence(logp, logp0, reverse).sum() / counts[j - 1]
        logq = _masked_log_probs(adapter, h[m])
        kl = _divergence(logp, logq, reverse)
        if per_state:
            dense = torch.zeros((B, T), device=H.device, dtype=kl.dtype)
            dense[m] = kl
            row_mean = dense.sum(-1) / m.sum(-1).clamp(min=1)
            loss = loss + (1 - focus) * row_mean.sum() / counts[R1 - 1 + j - 1]
        else:
            loss = loss + (1 - focus) * kl.sum() / counts[j - 1]
        if focus > 0:
            with torch.no_grad():
                neg_h = torch.full((2, B, T), float("-inf"), device=H.device)
                neg_h[0][m] = (logp.exp() * logp).sum(-1)
                neg_h[1][m] = (logq.exp() * logq).sum(-1)
                weight = torch.softmax(neg_h / focus_temperature, dim=-1).nan_to_num_(0.0).mean(0)
            dense = torch.zeros((B, T), device=H.device, dtype=kl.dtype)
            dense[m] = kl
            loss = loss + focus * (weight * dense).sum() / counts[R1 - 1 + j - 1]
    return loss, base


def sampler_optimizer(sampler: AdjustSampler, cfg: SamplerTrainConfig) -> torch.optim.AdamW:
    """AdamW over the sampler; with ``gate_lr_scale`` ≠ 1 the output gate ``norm_out.weight`` is its own
    group, whose ``lr_scale`` multiplies the schedule's rate (one group otherwise, so the optimizer
    states of runs saved before the option existed still load)."""
    params = list(sampler.parameters())
    groups = [{"params": params, "lr_scale": 1.0}]
    if cfg.gate_lr_scale != 1.0:
        gate = sampler.norm_out.weight
        groups = [{"params": [p for p in params if p is not gate], "lr_scale": 1.0},
                  {"params": [gate], "lr_scale": cfg.gate_lr_scale}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, cfg.adam_beta2))


def group_lr_scale(scale: float, step: int, cfg: SamplerTrainConfig) -> float:
    """A group's multiplier ``scale`` at ``step``: held, or with ``gate_lr_fade`` > 0 fading linearly to 1
    by that share of the run's steps."""
    if cfg.gate_lr_fade <= 0:
        return scale
    return 1.0 + (scale - 1.0) * max(0.0, 1.0 - step / (cfg.gate_lr_fade * cfg.steps))


def _deep_skip(cfg: SamplerTrainConfig, g: torch.Generator) -> int:
    """Untrained passes before a step's R trained ones: 0, or with probability ``cfg.deep`` m uniform
    over 1 .. R + 1, so the trained passes reach pass 2R + 1, the last one K = 2(R + 1) runs. Draws
    nothing from ``g`` when ``cfg.deep`` is 0: runs without the option keep their data order."""
    if cfg.deep <= 0 or float(torch.rand((), generator=g)) >= cfg.deep:
        return 0
    return int(torch.randint(1, cfg.rollout + 2, (), generator=g))


def _step_rollout(cfg: SamplerTrainConfig, g: torch.Generator) -> int:
    """The passes a step unrolls: R, or with ``cfg.rollout_mix`` K − 1 for a K uniform over the readout's
    Ks. Draws nothing from ``g`` without the option: runs without it keep their data order."""
    if not cfg.rollout_mix:
        return cfg.rollout
    Ks = readout_Ks(cfg.rollout)
    return Ks[int(torch.randint(len(Ks), (), generator=g))] - 1


def _draw(traj: Trajectories, rows: torch.Tensor, g: torch.Generator, n: int,
          windows: int = 1) -> tuple[list, list]:
    """n (row, t) pairs, t uniform over the states x_0 .. x_{L−2} of each trajectory (every state
    that has a commit after it; a rollout that runs past the last state stops there).

    With `windows` = W > 1, each drawn trajectory gives the starts t0 .. t0 + W − 1 that fall in
    range, t0 uniform over [−(W − 1), L − 2]: every t stays equally likely, the first and last
    states included, and the windows' states overlap, so `rollout_kl` runs the base once per
    distinct state — about (W + R) / (W (R + 1)) of the base forwards of W independent draws.
    """
    steps = traj.num_steps[rows]
    rows = rows[steps > 1]
    if len(rows) == 0:
        raise ValueError("data: no trajectory has two or more unmasking steps")
    picked_rows, picked_ts = [], []
    while len(picked_rows) < n:
        k = -(-(n - len(picked_rows)) // windows)
        picked = rows[torch.randint(len(rows), (k,), generator=g)]
        hi = traj.num_steps[picked] - 1  # starts t ∈ [0, hi)
        t0 = (torch.rand(k, generator=g) * (hi + windows - 1)).long() - (windows - 1)
        for r, t, top in zip(picked.tolist(), t0.tolist(), hi.tolist()):
            ts = range(max(t, 0), min(t + windows, top))
            picked_rows += [r] * len(ts)
            picked_ts += ts
    return picked_rows[:n], picked_ts[:n]


def _concat_batches(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor],
                    pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (states [R+1, B, T], attention [B, T]) batches as one, left-padded to the wider T."""
    width = max(a[0].shape[-1], b[0].shape[-1])
    xs, attn = [], []
    for x, m in (a, b):
        extra = width - x.shape[-1]
        xs.append(F.pad(x, (extra, 0), value=pad))
        attn.append(F.pad(m, (extra, 0), value=0))
    return torch.cat(xs, 1), torch.cat(attn, 0)


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
    testbed=None,
) -> AdjustSampler:
    """Train (or resume training) a sampler for `model` and save it to `out_dir`.

    A `train_state.pt` in `out_dir` is resumed from (same settings required): the
    sampler, optimizer and data-order RNG continue exactly where they stopped.
    SIGTERM/SIGINT end the run after the current step with a checkpoint;
    `stop_after` does the same after that many steps, as a scheduler's limit would.
    `rank` (from `Rank.from_env()` under torchrun) splits each batch over the ranks
    (see `adjust.train.distributed`); rank 0 alone writes the log and checkpoints,
    and every rank resumes from them, so `out_dir` must be on a shared filesystem.
    On CUDA, and on CPU with ``cfg.cpu_precision`` "bf16", the training forwards run under bf16 autocast
    (KLs, weights and optimizer in fp32; the held-out KL and the readout in the model's dtype).
    Identity (`adjust.jobstate`): `traj` must come from `model` (by weight fingerprint,
    unless `allow_base_mismatch`: the same base re-saved), a resumed run must have the
    same base, data and settings; a larger `cfg.steps` extends a complete run. A stop
    signal raises `adjust.jobstate.JobInterrupted` after the checkpoint.
    At every evaluation rank 0 also runs the readiness readout (`adjust.train.readiness`)
    on held-out prompts — scored with `testbed` when it has a per-sample metric. The
    saved (and returned) sampler is the one of the best readout so far, with that readout
    and its verdict in `extra["readiness"]`: generation quality can drop between two
    evaluations while the teacher-forced KL does not move, so the last weights are not
    always the best ones. (`train_state.pt` holds the current weights, to resume.)
    With ``cfg.sampler_inputs="auto"`` (the default) the tokens g embeds are chosen first by a race
    over the first one or two evaluation intervals (`adjust.train.inputs_race`); `stop_after` counts
    the steps after it.
    """
    cfg = (cfg or SamplerTrainConfig()).resolved()
    rank = rank or Rank()
    if cfg.sampler_inputs not in ("auto", *INPUTS):
        raise ValueError(f"sampler_inputs must be 'auto' or one of {INPUTS}, got {cfg.sampler_inputs!r}")
    if cfg.rollout < 1 or cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"rollout, steps and batch_size must be ≥ 1, got {cfg.rollout}, {cfg.steps}, {cfg.batch_size}")
    for name in ("on_policy", "focus", "reverse", "gate_lr_fade", "deep"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    check_positions(cfg.positions)  # before an inputs race starts
    if not 0 <= cfg.adam_beta2 < 1:
        raise ValueError(f"adam_beta2 must be in [0, 1), got {cfg.adam_beta2}")
    if cfg.cpu_precision not in CPU_PRECISIONS[1:]:
        raise ValueError(f"cpu_precision must be one of {CPU_PRECISIONS}, got {cfg.cpu_precision!r}")
    if cfg.kl_weight not in KL_WEIGHTS:
        raise ValueError(f"kl_weight must be one of {KL_WEIGHTS}, got {cfg.kl_weight!r}")
    if cfg.rollout_mix and cfg.deep > 0:
        raise ValueError("rollout_mix and deep both choose the passes a step trains: set one of them")
    if cfg.batch_size < rank.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is smaller than the {rank.world_size} ranks it is split over")
    # Signals are caught from here, not from the first step: a stop during the set-up or between the
    # runs of an inputs race then ends the run at its next step, with a checkpoint, as during training.
    with GracefulStop() as stop:
        if cfg.sampler_inputs == "auto":
            from adjust.train.inputs_race import race_inputs  # imported here: it trains with this function

            race = race_inputs(train_sampler, model, traj, out_dir, cfg, rank, stop, progress=progress,
                               provenance=provenance, allow_base_mismatch=allow_base_mismatch, testbed=testbed)
            cfg = replace(cfg, sampler_inputs=race["chosen"])
            if race["raced"]:
                provenance = {**(provenance or {}), "inputs_race": race}
        return _train(model, traj, Path(out_dir), cfg, progress, provenance, stop_after, rank, allow_base_mismatch,
                      testbed, stop)


def _train(model, traj: Trajectories, out: Path, cfg: SamplerTrainConfig, progress: bool, provenance: dict | None,
           stop_after: int | None, rank: Rank, allow_base_mismatch: bool, testbed, stop: GracefulStop) -> AdjustSampler:
    """`train_sampler` once its settings are checked and its inputs chosen; ``stop`` catches the stop signals."""
    adapter = as_adapter(model)
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    check_base(traj.base, adapter.info, "data", allow_base_mismatch)
    inputs = {"base": asdict(adapter.info), "data": traj.fingerprint,
              "train": {k: v for k, v in asdict(cfg).items() if k != "steps"}}
    job = Job.begin(out, "train-sampler", inputs, cfg.steps, writer=rank.is_main, allow_base_mismatch=allow_base_mismatch,
                    length_fields=LENGTH_FIELDS, added_defaults={"train": setting_defaults(cfg)})
    n_held = max(1, int(len(traj) * cfg.heldout_fraction))
    if len(traj) <= n_held:
        raise ValueError(f"data: {len(traj)} trajectories are too few to hold out {n_held} for validation")
    train_rows, held_rows = torch.arange(len(traj) - n_held), torch.arange(len(traj) - n_held, len(traj))
    pad = adapter.pad_token_id if adapter.pad_token_id is not None else 0
    held = _draw(traj, held_rows, torch.Generator().manual_seed(cfg.seed + 1), cfg.heldout_examples)
    held_batches = [] if not rank.is_main else [  # only rank 0 evaluates
        rollout_states(traj, held[0][i : i + cfg.batch_size], held[1][i : i + cfg.batch_size], cfg.rollout,
                       adapter.mask_token_id, pad)
        for i in range(0, cfg.heldout_examples, cfg.batch_size)
    ]
    probe = None
    if rank.is_main and cfg.readout_prompts > 0:
        probe = ReadinessProbe(adapter, traj, held_rows, cfg.rollout, cfg.readout_prompts, testbed, folder=out)

    sampler = AdjustSampler.from_base(adapter, extra={"rollout": cfg.rollout, **(provenance or {})},
                                      inputs=cfg.sampler_inputs, positions=cfg.positions)
    sampler.data_fingerprint = traj.fingerprint
    with torch.no_grad():  # a resumed run's saved gate replaces it below
        sampler.norm_out.weight.fill_(cfg.gate_init)
    opt = sampler_optimizer(sampler, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    start, pool, best = 0, None, (-math.inf, 0)  # best readout score and its step
    state = load_state(out, cfg)
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        start, best = state["step"], tuple(state["best"])
        if state.get("pool") is not None:  # the self-generated pool in use when the run stopped
            pool = Trajectories(*state["pool"], settings=dict(traj.settings))
    log = (out / "train_log.jsonl").open("a") if rank.is_main else None
    if start == 0 and log is not None:
        log.write(json.dumps({"event": "start", "train": asdict(cfg), "params": sampler.num_parameters(),
                              "trajectories": len(traj)}) + "\n")

    def evaluate() -> tuple[float, float]:
        sampler.eval()
        with torch.no_grad():
            pairs = [rollout_kl(sampler, adapter, xs.to(adapter.device), a.to(adapter.device), reverse=cfg.reverse)
                     for xs, a in held_batches]
        sampler.train()
        return (sum(p[0].item() for p in pairs) / len(pairs), sum(p[1].item() for p in pairs) / len(pairs))

    progress = progress and rank.is_main
    autocast = torch.autocast(adapter.device.type, dtype=torch.bfloat16,
                              enabled=adapter.device.type == "cuda"
                              or (adapter.device.type == "cpu" and cfg.cpu_precision == "bf16"))
    bar = progress_bar(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train-sampler",
                       disable=not progress)
    sampler.train()
    t0, ema, done = time.perf_counter(), None, start
    for step in bar:
        mine = slice(rank.rank, None, rank.world_size)
        n_pool = round(cfg.on_policy * cfg.batch_size)
        if n_pool and (pool is None or step % cfg.pool_every == 0):
            with autocast:
                pool = self_generated(sampler, adapter, traj, train_rows[torch.randint(
                    len(train_rows), (cfg.pool_size,), generator=g)].tolist(),
                    readout_Ks(cfg.rollout), seed=cfg.seed + 7 * step)
        skip, passes = _deep_skip(cfg, g), _step_rollout(cfg, g)
        rows, ts = _draw(traj, train_rows, g, cfg.batch_size - n_pool, cfg.windows)
        xs, attn = rollout_states(traj, rows[mine], ts[mine], skip + passes, adapter.mask_token_id, pad)
        if n_pool:
            prow, pts = _draw(pool, torch.arange(len(pool)), g, n_pool, cfg.windows)
            pxs, pattn = rollout_states(pool, prow[mine], pts[mine], skip + passes, adapter.mask_token_id, pad)
            xs, attn = _concat_batches((xs, attn), (pxs, pattn), pad)
        xs, attn = xs.to(adapter.device), attn.to(adapter.device)
        for group in opt.param_groups:
            group["lr"] = (warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)
                           * group_lr_scale(group.get("lr_scale", 1.0), step, cfg))
        with autocast:
            loss, _ = rollout_kl(sampler, adapter, xs, attn, rank, focus=cfg.focus, reverse=cfg.reverse,
                                 baseline=False, skip=skip, per_state=cfg.kl_weight == "state")
            if cfg.rollout_mix:
                loss = loss / passes
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
        # Evaluations run on their schedule only: one more at a stop would change which readout is
        # the best, so a resumed run would keep other weights than an uninterrupted one.
        scheduled = cfg.evaluates_after(step + 1)
        if rank.is_main and scheduled:
            held_kl, parallel_kl = evaluate()
            rec = {"step": step + 1, "train_kl": round(ema, 5), "heldout_kl": round(held_kl, 5),
                   "parallel_kl": round(parallel_kl, 5)}
            line = f"step {step + 1}: train KL {ema:.4f}  held-out KL {held_kl:.4f} (parallel {parallel_kl:.4f})"
            keep = True  # without a readout every evaluation's weights are kept, as before
            if probe is not None:
                t_probe = time.perf_counter()
                readout = probe(sampler, step + 1)
                rec["readiness"] = readout.to_record()
                rec["readout_seconds"] = round(time.perf_counter() - t_probe, 1)
                line += "  " + readout.summary()
                score = readout.score()
                keep = score > best[0] or best[1] == 0  # the first readout is kept whatever its score
                if keep:
                    best = (score, step + 1)
                    sampler.extra["readiness"] = rec["readiness"]
                rec["kept_step"] = best[1]
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if progress:
                bar.write(line + ("" if keep else f"  (keeping step {best[1]})"))
            if keep:
                sampler.extra.update(heldout_kl=round(held_kl, 5), parallel_kl=round(parallel_kl, 5),
                                     steps=step + 1)
                sampler.save_pretrained(out)
        if rank.is_main and (scheduled or stopping):
            save_state(out, sampler=sampler.state_dict(), optimizer=opt.state_dict(), generator=g.get_state(),
                       step=step + 1, config=asdict(cfg), best=best,
                       pool=None if pool is None else (pool.input_ids, pool.attention_mask, pool.rank))
            job.checkpoint(step + 1)
        done = step + 1
        if stopping:
            break
    if log is not None:
        log.close()
    rank.barrier()  # the other ranks return once rank 0's checkpoint is on disk
    job.end(stop)
    if probe is not None and done >= cfg.steps:  # the weights of the best readout, as saved
        sampler = AdjustSampler.from_pretrained(out, device=adapter.device, dtype=adapter.dtype)
    sampler.eval()
    return sampler
