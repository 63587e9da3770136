"""How soon a sampler run leaves the parallel plateau: the first steps of the default run, per setting.

    python -m benchmarks.plateau_probe --base tasks --data runs/traj-tasks --steps 300 \
        --cfg '{}' '{"gate_lr_scale": 10}' '{"gate_init": 0.01}'

For each ``--cfg`` (overrides of `adjust.train.config.SamplerTrainConfig`) it trains the default
recipe (full-length schedule, so the warm-up and peak rate are the real run's) for ``--steps``
steps, held-out KL every 50 steps, no readout, and prints ``settings step held-out-KL parallel-KL``
lines: a held-out KL at the parallel KL means g is still the parallel baseline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main() -> None:
    import adjust
    from adjust.train.config import SamplerTrainConfig
    from adjust.train.sampler import train_sampler
    from adjust.train.trajectories import load_trajectories

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True), ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--cfg", nargs="+", default=["{}"], help="JSON overrides of the default recipe, one per run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = adjust.MaskedDiffusionLM.from_pretrained(args.base)
    traj = load_trajectories(args.data)
    for overrides in args.cfg:
        with tempfile.TemporaryDirectory() as out:
            cfg = SamplerTrainConfig(**{"eval_every": 50, "readout_prompts": 0, **json.loads(overrides)})
            train_sampler(model, traj, out, cfg, progress=False, stop_after=args.steps)
            for line in (Path(out) / "train_log.jsonl").read_text().splitlines():
                r = json.loads(line)
                if "heldout_kl" in r:
                    print(overrides, r["step"], r["heldout_kl"], r["parallel_kl"], flush=True)


if __name__ == "__main__":
    main()
