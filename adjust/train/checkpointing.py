"""Resumable training state shared by the trainers: atomic saves and a graceful stop.

A trainer keeps everything that determines its future in one `train_state.pt`
(weights, optimizer, data-order RNG, step, settings). It is written to a temp file
and renamed, so a kill at any moment leaves either the previous state or the new
one, never a torn file. `GracefulStop` turns SIGTERM/SIGINT into a flag the loop
checks after each step, so a scheduler's stop signal ends with a checkpoint (and
`adjust.jobstate.Job.end` then exits with the signal's status). The total number of
steps may grow between runs (extending a finished run, see `adjust.jobstate`), and with
it the settings derived from the length (`LENGTH_FIELDS`); every other setting must stay
the same (`adjust.jobstate` holds a resume that is no extension to all of them).
"""

from __future__ import annotations

import signal
from dataclasses import asdict
from pathlib import Path

import torch

from adjust.fileio import atomic_write

STATE_NAME = "train_state.pt"
# Settings that follow from a run's length (the training configs derive them from steps or
# budget): extending a finished run may change them; every other setting must match.
LENGTH_FIELDS = ("steps", "budget", "warmup", "eval_every", "pool_every")


def resume_settings(config) -> dict:
    """`config`'s settings without the length-derived ones (`LENGTH_FIELDS`)."""
    return {k: v for k, v in asdict(config).items() if k not in LENGTH_FIELDS}


def setting_defaults(config) -> dict:
    """What a record written before a setting existed reads it as: the setting's default (settings are
    added with the old behaviour as default), or the old behaviour the dataclass names in ``OLD_BEHAVIOUR``
    where a new default changed it."""
    return {**asdict(type(config)()), **getattr(type(config), "OLD_BEHAVIOUR", {})}


def save_state(out: Path, **state) -> None:
    """Atomically write `state` to `out/train_state.pt`."""
    atomic_write(out / STATE_NAME, lambda f: torch.save(state, f))


def load_state(out: Path, config) -> dict | None:
    """The saved state of a run in `out`, or None for a fresh run.

    Refuses (ValueError) a state written with other settings: resuming must not
    silently change what is being trained.
    """
    path = out / STATE_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{path}: unreadable training state ({e}); delete it to start over") from e
    recorded = {**setting_defaults(config), **(state.get("config") or {})}  # settings added since: their defaults
    saved = {k: v for k, v in recorded.items() if k not in LENGTH_FIELDS}
    if saved != resume_settings(config):
        raise ValueError(f"{path}: was written with other training settings; use a new --out or the same flags")
    if state["step"] > config.steps:
        raise ValueError(f"{path}: has trained {state['step']} steps, more than the {config.steps} asked for")
    return state


class GracefulStop:
    """Context manager: SIGTERM/SIGINT set `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0  # the signal that asked to stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signum = signum

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
