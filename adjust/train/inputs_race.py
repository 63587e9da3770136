"""``sampler_inputs="auto"``: choose the tokens g embeds by a race over the run's first evaluation.

The two inputs of `adjust.sampler` fail on different data (docs/training.md, "The tokens g embeds"):
with "all" (the paper's g) a run can sit on the parallel plateau for most of its budget where the
joint KL sits in few positions (tasks); "new" leaves that plateau within one evaluation there but
failed one of two mirror runs outright. So both train the run's first evaluation interval, on the
run's own schedule, in ``out/race/<inputs>``; "new" is kept only when its held-out KL is below
`RACE_MARGIN` × that of "all" (it learns clearly faster), else "all". The kept run's state becomes
the run's (``out``), which then resumes from it exactly as an uninterrupted run with that input
would go on. The choice and both KLs are kept in ``out/inputs_race.json`` (a later call with the
same ``out`` resumes without racing again) and in the sampler's ``extra["inputs_race"]``.
Cost: one evaluation interval (1/8 of the run by default) more, and one more readout (parallel's
readout is measured once, by the first racer, and kept for the second and the run).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from adjust.checkpoint import CONFIG_NAME
from adjust.fileio import write_text
from adjust.jobstate import LOCK_NAME, JobInterrupted, check_folder, read_job
from adjust.sampler import INPUTS
from adjust.train.checkpointing import GracefulStop
from adjust.train.config import SamplerTrainConfig
from adjust.train.distributed import Rank
from adjust.train.readiness import PARALLEL_NAME

RACE_MARGIN = 0.8  # "new" must end the first interval with a held-out KL ≥ 20% below that of "all"
RECORD_NAME = "inputs_race.json"


def race_record(out: str | Path) -> dict | None:
    """The race's record in a run folder (``chosen``, ``step``, ``heldout_kl`` per input), or None."""
    path = Path(out) / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def choose(heldout_kl: dict[str, float]) -> str:
    """The rule: "new" when its held-out KL is below `RACE_MARGIN` × that of "all", else "all"."""
    return "new" if heldout_kl["new"] < RACE_MARGIN * heldout_kl["all"] else "all"


def race_inputs(train, model, traj, out: str | Path, cfg: SamplerTrainConfig, rank: Rank, stop: GracefulStop,
                **train_kw) -> dict:
    """Run the race for ``cfg`` (resolved, ``sampler_inputs="auto"``) into ``out`` and return its record
    (``chosen``; ``raced`` False for a folder holding a run of explicit inputs, which is resumed with them).

    ``train`` is `adjust.train.sampler.train_sampler` (passed in: it calls this); ``stop`` its signal
    catcher, read before each race run. A race interrupted before its evaluation starts over on the
    next call; one that reached it is not re-run.
    """
    out = Path(out)
    check_folder(out, "train-sampler")  # before race/ is made inside it
    record = race_record(out)
    if record is not None:
        return record
    job = read_job(out)
    if job is not None and not (out / "race").is_dir():  # (with race/: stopped while moving the winner in)
        return {"chosen": job["inputs"]["train"].get("sampler_inputs", "all"), "raced": False}
    step = cfg.first_evaluation()
    heldout = {}
    for before, inputs in zip((None, *INPUTS), INPUTS):
        folder = out / "race" / inputs
        found = _heldout_at(folder, step)
        if found is None:
            if rank.any(stop.requested):
                raise JobInterrupted(0, cfg.steps, "step", stop.signum)
            rank.barrier()  # every rank has read the folder before rank 0 clears it
            if rank.is_main:
                shutil.rmtree(folder, ignore_errors=True)
                kept = None if before is None else out / "race" / before / PARALLEL_NAME
                if kept is not None and kept.is_file():  # the same prompts and base: parallel's readout is shared
                    folder.mkdir(parents=True)
                    shutil.copy2(kept, folder / PARALLEL_NAME)
                print(f"train-sampler: racing sampler inputs '{inputs}' for the first {step} of {cfg.steps} steps "
                      "(--sampler-inputs auto)", file=sys.stderr, flush=True)
            train(model, traj, folder, replace(cfg, sampler_inputs=inputs), stop_after=step, rank=rank, **train_kw)
            found = _heldout_at(folder, step)  # train ends on a barrier: rank 0's log is on disk
        heldout[inputs] = found
    chosen = choose(heldout)
    record = {"chosen": chosen, "raced": True, "step": step, "heldout_kl": heldout, "margin": RACE_MARGIN}
    rank.barrier()
    if rank.is_main:
        for f in (out / "race" / chosen).iterdir():
            if f.is_file() and f.name != LOCK_NAME:
                shutil.copy2(f, out / f.name)
        config = out / CONFIG_NAME  # the race's saved sampler says how its inputs were chosen, as later saves do
        raw = json.loads(config.read_text())
        raw["extra"] = {**raw.get("extra", {}), "inputs_race": record}
        write_text(config, json.dumps(raw, indent=2) + "\n")  # atomic, as every job file
        write_text(out / RECORD_NAME, json.dumps(record, indent=1) + "\n")
        shutil.rmtree(out / "race")
        print(f"train-sampler: inputs '{chosen}' (held-out KL at step {step}: all {heldout['all']:.4f}, "
              f"new {heldout['new']:.4f}; 'new' needs < {RACE_MARGIN} x 'all')", file=sys.stderr, flush=True)
    rank.barrier()
    return race_record(out)


def _heldout_at(folder: Path, step: int) -> float | None:
    """The held-out KL a race run logged at ``step``, or None when it did not get there."""
    log = folder / "train_log.jsonl"
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if rec.get("step") == step and "heldout_kl" in rec:
            return rec["heldout_kl"]
    return None
