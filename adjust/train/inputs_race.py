"""``sampler_inputs="auto"``: choose the tokens g embeds by a race over the run's first evaluations.

The two inputs of `adjust.sampler` fail on different data (docs/training.md, "The tokens g embeds"):
with "all" (the paper's g) a run can sit on the parallel plateau for most of its budget where the
joint KL sits in few positions (tasks, the end-to-end palindromes); "new" leaves that plateau
sooner there but fell behind on mirror. So both train on the run's own schedule, each in
``out/race/<inputs>``, to the run's first evaluation; the input whose held-out KL there is below
`RACE_MARGIN` × the other's (a lead) is kept. Without a lead both train on to the next evaluation,
for at most `RACE_INTERVALS` of them, then "all" is kept unless "new" leads: the first evaluation
alone called close races that the second decided (mirror: 0.0650 / 0.0636 at step 195, 0.0061 /
0.0206 at 390; palindromes 0.163 / 0.171, then 0.0115 / 0.0068). The kept run's state becomes the
run's (``out``), which then resumes from it exactly as an uninterrupted run with that input would
go on. The choice and every evaluation of the race are kept in ``out/inputs_race.json`` (a later
call with the same ``out`` resumes without racing again) and in the sampler's ``extra["inputs_race"]``.
Cost: the losing input's one or two intervals (1/8 of the run each by default) and readouts
(parallel's readout is measured once, by the first racer, and kept for the others and the run).
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

RACE_MARGIN = 0.8  # a lead: a held-out KL ≥ 20% below the other input's
RACE_INTERVALS = 2  # evaluation intervals both inputs train at most; without a lead by then, "all"
RECORD_NAME = "inputs_race.json"


def race_record(out: str | Path) -> dict | None:
    """The race's record in a run folder (``chosen``, the deciding ``step`` and ``heldout_kl`` per input
    there, ``history``: each evaluation the race ran, in a record made since the second interval), or None."""
    path = Path(out) / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def choose(heldout_kl: dict[str, float], last: bool = True) -> str | None:
    """The rule at one of the race's evaluations: the input whose held-out KL is below `RACE_MARGIN` ×
    the other's; without such a lead "all" at the race's ``last`` evaluation, else None (race on)."""
    for a, b in (("new", "all"), ("all", "new")):
        if heldout_kl[a] < RACE_MARGIN * heldout_kl[b]:
            return a
    return "all" if last else None


def race_inputs(train, model, traj, out: str | Path, cfg: SamplerTrainConfig, rank: Rank, stop: GracefulStop,
                **train_kw) -> dict:
    """Run the race for ``cfg`` (resolved, ``sampler_inputs="auto"``) into ``out`` and return its record
    (``chosen``; ``raced`` False for a folder holding a run of explicit inputs, which is resumed with them).

    ``train`` is `adjust.train.sampler.train_sampler` (passed in: it calls this); ``stop`` its signal
    catcher, read before each race run. A race run interrupted before an evaluation resumes from its
    checkpoint on the next call; an evaluation it logged is not re-run.
    """
    out = Path(out)
    check_folder(out, "train-sampler")  # before race/ is made inside it
    record = race_record(out)
    if record is not None:
        return record
    job = read_job(out)
    if job is not None and not (out / "race").is_dir():  # (with race/: stopped while moving the winner in)
        return {"chosen": job["inputs"]["train"].get("sampler_inputs", "all"), "raced": False}
    steps = cfg.evaluations()[:RACE_INTERVALS]
    history = []
    for i, step in enumerate(steps):
        heldout = {inputs: _run_to(train, model, traj, out, cfg, rank, stop, inputs, step, train_kw) for inputs in INPUTS}
        history.append({"step": step, "heldout_kl": heldout})
        chosen = choose(heldout, last=i == len(steps) - 1)
        if chosen is not None:
            break
        if rank.is_main:
            print(f"train-sampler: no lead at step {step} (held-out KL all {heldout['all']:.4f}, new "
                  f"{heldout['new']:.4f}; a lead is < {RACE_MARGIN} x the other's): both race on",
                  file=sys.stderr, flush=True)
    record = {"chosen": chosen, "raced": True, "step": step, "heldout_kl": heldout, "margin": RACE_MARGIN,
              "history": history}
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
              f"new {heldout['new']:.4f}; a lead is < {RACE_MARGIN} x the other's, else 'all' after "
              f"{len(steps)} evaluations)", file=sys.stderr, flush=True)
    rank.barrier()
    return race_record(out)


def _run_to(train, model, traj, out: Path, cfg: SamplerTrainConfig, rank: Rank, stop: GracefulStop, inputs: str,
            step: int, train_kw: dict) -> float:
    """The held-out KL of the race run of ``inputs`` at ``step``, training (or resuming) it there first."""
    folder = out / "race" / inputs
    found = _heldout_at(folder, step)
    if found is not None:
        return found
    if rank.any(stop.requested):
        raise JobInterrupted(0, cfg.steps, "step", stop.signum)
    job = read_job(folder)
    if job is None:  # not started (or stopped before its job record): from step 0
        rank.barrier()  # every rank has read the folder before rank 0 clears it
        if rank.is_main:
            shutil.rmtree(folder, ignore_errors=True)
            kept = sorted((out / "race").glob(f"*/{PARALLEL_NAME}"))
            if kept:  # the same prompts and base: parallel's readout is shared
                folder.mkdir(parents=True)
                shutil.copy2(kept[0], folder / PARALLEL_NAME)
    if rank.is_main:
        print(f"train-sampler: racing sampler inputs '{inputs}' to step {step} of {cfg.steps} "
              "(--sampler-inputs auto)", file=sys.stderr, flush=True)
    done = 0 if job is None else job["done"]
    train(model, traj, folder, replace(cfg, sampler_inputs=inputs), stop_after=step - done, rank=rank, **train_kw)
    return _heldout_at(folder, step)  # train ends on a barrier: rank 0's log is on disk


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
