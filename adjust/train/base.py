"""Train a small `MaskedDiffusionLM` on a testbed or on a user's JSONL data.

The masked-diffusion objective is `MaskedDiffusionLM.diffusion_loss`; this module
owns the loop: data, AdamW with warm-up + cosine decay, a progress bar, a JSONL
loss log, held-out loss, and periodic checkpoints (safetensors + config + tokenizer).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from adjust.data.testbed import Testbed
from adjust.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, tokenizer_fingerprint
from adjust.identity import examples_fingerprint
from adjust.jobstate import Job
from adjust.models.mdlm import MaskedDiffusionLM, MDLMConfig
from adjust.progress import progress_bar
from adjust.train.batching import collate
from adjust.train.checkpointing import LENGTH_FIELDS, GracefulStop, load_state, save_state, setting_defaults
from adjust.train.schedule import warmup_cosine


@dataclass
class BaseTrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    num_examples: int = 50_000
    eval_examples: int = 512
    eval_every: int = 500
    seed: int = 0


@torch.no_grad()
def heldout_loss(model: MaskedDiffusionLM, batches, seed: int) -> float:
    """Mean diffusion loss over fixed batches with a fixed masking seed (comparable across steps)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    losses = [model.diffusion_loss(ids, loss, attn, generator=g).item() for ids, attn, loss in batches]
    model.train()
    return sum(losses) / len(losses)


def train_base(
    testbed: Testbed,
    out_dir: str | Path,
    model_config: dict | None = None,
    train: BaseTrainConfig | None = None,
    progress: bool = True,
    provenance: dict | None = None,
    stop_after: int | None = None,
) -> MaskedDiffusionLM:
    """Train a base model on `testbed` and save it (with its tokenizer) to `out_dir`.

    Resumes from `out_dir/train_state.pt` when present: the same data (by content),
    model shape and settings are required (`adjust.jobstate`); a larger `steps`
    extends a complete run, and a complete run rerun as it was returns its model.
    `stop_after` steps end the run with a checkpoint; SIGTERM/SIGINT do too, then
    raise `adjust.jobstate.JobInterrupted`.
    """
    cfg = train or BaseTrainConfig()
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be ≥ 1, got {cfg.steps} and {cfg.batch_size}")
    out = Path(out_dir)
    tok = testbed.tokenizer
    vocab_size = tok.get_vocab_size() if tok is not None else getattr(testbed, "vocab_size", None)
    if vocab_size is None:
        raise ValueError("token-id data without a tokenizer needs a vocabulary size (--vocab-size)")
    seq_len = 1 + max(len(e.prompt) for e in testbed.examples(64, seed=cfg.seed + 7)) + testbed.gen_length
    mc = MDLMConfig(
        vocab_size=vocab_size,
        mask_token_id=MASK_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        name=testbed.name,
        max_seq_len=max(2 * seq_len, 64),
        extra={"testbed": testbed.name, "gen_length": testbed.gen_length,
               **({"id_offset": testbed.id_offset} if getattr(testbed, "id_offset", 0) else {}), **(provenance or {})},
        **(model_config or {}),
    )
    train_set = testbed.examples(cfg.num_examples, seed=cfg.seed)
    shape = {k: v for k, v in asdict(mc).items() if k != "extra"}
    inputs = {"data": examples_fingerprint(train_set, tokenizer_fingerprint(tok) if tok is not None else None),
              "model": {**shape, "testbed": testbed.name, "gen_length": testbed.gen_length},
              "train": {k: v for k, v in asdict(cfg).items() if k != "steps"}}
    job = Job.begin(out, "train-base", inputs, cfg.steps, length_fields=LENGTH_FIELDS,
                    added_defaults={"train": setting_defaults(cfg)})
    if job.already_complete:
        job.end()
        return MaskedDiffusionLM.from_pretrained(out)
    torch.manual_seed(cfg.seed)
    model = MaskedDiffusionLM(mc)
    eval_set = testbed.examples(cfg.eval_examples, seed=cfg.seed + 1_000_003)
    eval_batches = [
        collate(eval_set[i : i + cfg.batch_size], BOS_ID, PAD_ID) for i in range(0, len(eval_set), cfg.batch_size)
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(cfg.seed)
    start = 0
    state = load_state(out, cfg)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        start = state["step"]
    log = (out / "train_log.jsonl").open("a" if start else "w")
    if start == 0:
        log.write(json.dumps({"event": "start", "model": asdict(mc), "train": asdict(cfg),
                              "params": model.num_parameters()}) + "\n")
    bar = progress_bar(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train-base {testbed.name}",
               disable=not progress)
    t0, ema = time.perf_counter(), None
    model.train()
    with GracefulStop() as stop:
        for step in bar:
            idx = torch.randint(len(train_set), (cfg.batch_size,), generator=g).tolist()
            ids, attn, loss_mask = collate([train_set[i] for i in idx], BOS_ID, PAD_ID)
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr)
            loss = model.diffusion_loss(ids, loss_mask, attn, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.set_postfix(loss=f"{ema:.3f}")
            stopping = stop.requested or (stop_after is not None and step + 1 - start >= stop_after)
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or stopping:
                held = heldout_loss(model, eval_batches, cfg.seed)
                rec = {"step": step + 1, "loss": round(ema, 5), "heldout_loss": round(held, 5),
                       "lr": warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr),
                       "seconds": round(time.perf_counter() - t0, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if progress:
                    bar.write(f"step {step + 1}: train {ema:.4f}  held-out {held:.4f}")
                model.save_pretrained(out, tokenizer=tok)
                save_state(out, model=model.state_dict(), optimizer=opt.state_dict(), generator=g.get_state(),
                           step=step + 1, config=asdict(cfg))
                job.checkpoint(step + 1)
            if stopping:
                break
    log.close()
    job.end(stop)
    model.eval()
    return model
