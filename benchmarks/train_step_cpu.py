"""Time one sampler training step's loss and backward on the CPU, with and without the parallel baseline.

    python -m benchmarks.train_step_cpu [testbed [threads]]     # default: text, 1 thread (docs/training.md)

The shipped base and sampler of the testbed; 300 K = 1 trajectories made here (seed 0), one batch
of 256 training examples drawn as `train_sampler` draws them (R = 3, 4 windows); ``rollout_kl``
forward and backward with ``baseline`` True (the old training step) and False (today's) in
interleaved order; medians of the last 10 of 12 repeats each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

from adjust import AdjustSampler, MaskedDiffusionLM
from adjust.models.adapter import as_adapter
from adjust.train.rollouts import rollout_states
from adjust.train.sampler import _draw, rollout_kl
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories

BATCH, ROLLOUT, WINDOWS, REPEATS = 256, 3, 4, 12


def main(testbed: str = "text", threads: int | str = 1) -> None:
    torch.set_num_threads(int(threads))
    model, sampler = MaskedDiffusionLM.from_pretrained(testbed), AdjustSampler.from_pretrained(testbed)
    ad = as_adapter(model)
    with tempfile.TemporaryDirectory() as tmp:
        generate_trajectories(model, None, tmp, TrajectorySettings(num_sequences=300, gen_length=32), progress=False)
        traj = load_trajectories(tmp)
    rows, ts = _draw(traj, torch.arange(len(traj)), torch.Generator().manual_seed(0), BATCH, WINDOWS)
    xs, attn = rollout_states(traj, rows, ts, ROLLOUT, ad.mask_token_id, ad.pad_token_id)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(REPEATS):
        for baseline in (True, False) if i % 2 else (False, True):
            t0 = time.perf_counter()
            loss, _ = rollout_kl(sampler, ad, xs, attn, baseline=baseline)
            loss.backward()
            times[baseline].append(time.perf_counter() - t0)
    for baseline, t in times.items():
        print(f"{testbed}: rollout_kl + backward, baseline={baseline}, {threads} thread(s): "
              f"{statistics.median(t[2:]):.3f} s (median of {len(t) - 2})")


if __name__ == "__main__":
    main(*sys.argv[1:])
