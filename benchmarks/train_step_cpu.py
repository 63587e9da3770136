"""Time one sampler training step's loss and backward on the CPU: with and without the parallel baseline, or
in fp32 and under bf16 autocast (`SamplerTrainConfig.cpu_precision`).

    python -m benchmarks.train_step_cpu [testbed [threads [baseline|precision]]]   # default: text 1 baseline

The shipped base and sampler of the testbed; 300 K = 1 trajectories made here (seed 0; the testbed's own
prompts where it has them, else BOS), one batch of 256 training examples drawn as `train_sampler` draws
them (R = 3, 4 windows); ``rollout_kl`` forward and backward for each variant in interleaved order —
``baseline`` True (the old training step) and False (today's), or today's step in fp32 and under bf16
autocast — medians of the last 10 of 12 repeats each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

from adjust import AdjustSampler, MaskedDiffusionLM
from adjust.data import get_testbed
from adjust.models.adapter import as_adapter
from adjust.train.rollouts import rollout_states
from adjust.train.sampler import _draw, rollout_kl
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories

BATCH, ROLLOUT, WINDOWS, REPEATS = 256, 3, 4, 12


VARIANTS = {"baseline": {"baseline=True": (True, False), "baseline=False": (False, False)},
            "precision": {"fp32": (False, False), "bf16 autocast": (False, True)}}  # name: (baseline, bf16)


def main(testbed: str = "text", threads: int | str = 1, compare: str = "baseline") -> None:
    torch.set_num_threads(int(threads))
    model, sampler = MaskedDiffusionLM.from_pretrained(testbed), AdjustSampler.from_pretrained(testbed)
    ad = as_adapter(model)
    tb = get_testbed(testbed)
    prompts = [[ad.bos_token_id] + p.ids for p in tb.prompts(300, seed=0)]
    prompts = prompts if any(len(p) > 1 for p in prompts) else None  # an unconditional testbed: BOS
    with tempfile.TemporaryDirectory() as tmp:
        generate_trajectories(model, prompts, tmp, TrajectorySettings(num_sequences=300, gen_length=tb.gen_length),
                              progress=False)
        traj = load_trajectories(tmp)
    rows, ts = _draw(traj, torch.arange(len(traj)), torch.Generator().manual_seed(0), BATCH, WINDOWS)
    xs, attn = rollout_states(traj, rows, ts, ROLLOUT, ad.mask_token_id, ad.pad_token_id)
    variants = VARIANTS[compare]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(REPEATS):
        for name in list(variants)[:: 1 if i % 2 else -1]:
            baseline, bf16 = variants[name]
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = rollout_kl(sampler, ad, xs, attn, baseline=baseline)
            loss.backward()
            times[name].append(time.perf_counter() - t0)
    for name, t in times.items():
        print(f"{testbed}: rollout_kl + backward, {name}, {threads} thread(s): "
              f"{statistics.median(t[2:]):.3f} s (median of {len(t) - 2})")


if __name__ == "__main__":
    main(*sys.argv[1:])
