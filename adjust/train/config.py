"""Sampler-training settings (no torch import, so the CLI can show the defaults at once)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

KL_WEIGHTS = ("position", "state")  # SamplerTrainConfig.kl_weight
CPU_PRECISIONS = ("auto", "bf16", "fp32")  # SamplerTrainConfig.cpu_precision


def cpu_bf16_default() -> str:
    """What ``cpu_precision="auto"`` means on this machine: "bf16" where oneDNN multiplies bf16 natively (there
    a bf16 matmul is ~5x an fp32 one at the testbeds' shapes), "fp32" where bf16 would be emulated, slower."""
    import torch  # here, not at the top: the CLI shows the defaults without importing torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without that query: take the safe one
        native = False
    return "bf16" if native else "fp32"


@dataclass
class SamplerTrainConfig:
    """Sampler-training settings. `None` fields are derived from `budget` by `resolved()`.

    budget: training examples (sampled states x_t, each unrolled R steps) in the whole run;
        the one knob that sets the run's length. steps = budget / batch_size.
    windows: consecutive start states drawn from each trajectory of a batch (they share base
        forwards; see `adjust.train.sampler._draw`).
    on_policy: share of each batch drawn from a pool of ADJUST's own generations with the
        current sampler (`adjust.train.rollouts.self_generated`, refreshed every `pool_every`
        steps, `pool_size` prompts, default twice the batch); the rest are teacher-forced.
    focus: weight moved from the plain mean over masked positions onto the positions the
        unmasking rule is about to commit (see `rollout_kl`); 0 = the paper's objective.
    reverse: weight of the reverse KL(q ‖ p) in the objective (0 = the paper's forward KL(p ‖ q);
        1 = reverse only): the reverse KL is what the readout's joint KL measures, and it
        punishes mass on tokens the base rules out, which forward KL barely does. The held-out KL the run
        reports (and the inputs race compares) is this same mixture, for the sampler and for parallel.
    kl_weight: how a pass's KL is averaged over the batch: "position" = every masked position alike,
        so a state weighs as many times as it has masked positions (the paper's); "state" = every
        state alike, each the mean KL over its own masked positions. Generation commits one token per
        state and pass, so "state" weighs the near-complete states, where a pass's one commit is
        nearly determined by the tokens around it, as often as generation meets them.
    readout_prompts: held-out prompts of the readiness readout (0 = no readout).
    gate_lr_scale: learning-rate multiplier of ``norm_out.weight``, the zero-initialised gate that
        makes a fresh g the parallel baseline (every other weight's gradient is proportional to it,
        so the run leaves the parallel plateau only as fast as the gate grows); 1 = one rate for all.
    gate_lr_fade: share of the run over which that multiplier fades linearly to 1 (the gate fast
        while the run leaves the plateau, at the common rate after); 0 = the multiplier holds all run.
    gate_init: the value every entry of that gate starts a run at. 0 = a fresh g is exactly the
        parallel baseline and no other weight moves until the gate does; a small value keeps g
        within that much of parallel while every weight learns from the first step.
    deep: share of the steps whose R trained passes start m passes after the base forward (m uniform
        over 1 .. R + 1; those m passes run without loss or gradient), so that the passes generation
        runs past R at K up to 2(R + 1) are trained too; 0 = every step trains passes 1 .. R (the paper's).
    rollout_mix: each step unrolls K − 1 passes for a K drawn uniformly from the readout's Ks (2, R + 1,
        2(R + 1)) and its loss is the mean KL over those passes, so every K generation is read at is
        trained, each with the same weight; False = every step unrolls R passes, loss summed (the paper's).
    sampler_inputs: the tokens the sampler embeds (`adjust.sampler`): "new" = only those committed
        since the step's base forward, every other position as MASK; "all" = every current token
        (the paper's g); "auto" = both train to the first evaluation, and to the second when neither
        leads there; the one with a clear lead is kept, else "all" (`adjust.train.inputs_race`).
    positions: sinusoid frequencies of the absolute positions added to g's layer input
        (`adjust.sampler`); 0 = none, the paper's g.
    adam_beta2: AdamW's second-moment decay. 0.95 (not torch's 0.999) keeps the step size in line when
        the gradient's scale changes fast — as the run leaves the parallel plateau and the on-policy pool is
        refreshed; with 0.999 those moments made loss spikes that some seeds never recovered from.
    cpu_precision: the forward passes of a CPU run (base targets, sampler passes, the on-policy pool's
        generation): "fp32" (the default) = none; "bf16" = under bf16 autocast, as every CUDA run (weights,
        optimizer, losses, the held-out KL and the readout stay fp32; a step 1.7-1.8x faster on the testbeds);
        "auto" (resolved by `resolved()`) = bf16 where the CPU multiplies bf16 natively (AVX512-BF16 / AMX),
        else fp32. Not the default: it changes which input the inputs race keeps on close calls.
    """

    # What a run recorded before a setting existed reads it as, where that is not the setting's default
    # (`adjust.train.checkpointing.setting_defaults`): samplers before `positions` had none, and
    # runs before `adam_beta2` used torch's AdamW default.
    OLD_BEHAVIOUR: ClassVar[dict] = {"positions": 0, "adam_beta2": 0.999}

    rollout: int = 3
    budget: int = 400_000
    batch_size: int | None = None
    steps: int | None = None
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int | None = None
    windows: int = 4
    on_policy: float = 0.5
    pool_size: int | None = None
    pool_every: int | None = None
    focus: float = 0.0
    reverse: float = 0.0
    kl_weight: str = "position"
    heldout_fraction: float = 0.05
    heldout_examples: int = 256
    eval_every: int | None = None
    readout_prompts: int = 256
    gate_lr_scale: float = 1.0
    gate_lr_fade: float = 0.0
    gate_init: float = 0.0
    deep: float = 0.0
    rollout_mix: bool = False
    sampler_inputs: str = "auto"
    positions: int = 16
    adam_beta2: float = 0.95
    cpu_precision: str = "fp32"
    seed: int = 0

    def resolved(self) -> "SamplerTrainConfig":
        """A copy with every derived field set: batch 256 (less for tiny budgets, so a run keeps
        ≥ 400 steps), steps = budget / batch, warm-up 5% of the steps, 8 evaluations, ``cpu_precision``
        "auto" as this machine's CPU reads it."""
        batch = self.batch_size or min(256, max(8, self.budget // 400))
        steps = self.steps or max(1, -(-self.budget // batch))
        return replace(self, batch_size=batch, steps=steps, budget=batch * steps,
                       warmup=self.warmup if self.warmup is not None else max(1, steps // 20),
                       eval_every=self.eval_every or max(1, steps // 8),
                       pool_size=self.pool_size or 2 * batch,
                       pool_every=self.pool_every or max(1, steps // 16),
                       cpu_precision=cpu_bf16_default() if self.cpu_precision == "auto" else self.cpu_precision)

    def evaluates_after(self, step: int) -> bool:
        """Whether a resolved run evaluates after its first ``step`` steps: every ``eval_every`` steps and at
        the last, but not an interval's evaluation within half an interval of the last one (with the
        default 8 evaluations, 1563 steps evaluated at 1560 and at 1563: the same weights, read out twice)."""
        if step == self.steps:
            return True
        return step % self.eval_every == 0 and 2 * (self.steps - step) >= self.eval_every

    def evaluations(self) -> list[int]:
        """The steps after which a resolved run evaluates, in order (the last one is ``steps``)."""
        return [s for s in range(self.eval_every, self.steps, self.eval_every) if self.evaluates_after(s)] + [self.steps]
