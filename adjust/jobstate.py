"""Job state of an output folder: what made it, how far it got, and who is writing it.

`adjust train-base`, `train-sampler` and `data` each own their `--out` folder through a
`Job`:

- `job.json` records the job's kind, its *inputs* (fingerprints of the base and the
  data, the settings), its progress (`done` of `total` steps or sequences) and its
  status: `running`, `interrupted` or `complete`. A rerun compares its inputs with
  the recorded ones and refuses another base, other data or other settings, naming
  both; a complete folder rerun with the same inputs is "already complete"; a larger
  total extends a complete run (more steps, more sequences). An interrupted one
  must be rerun with the same total.
- `job.lock` is held (an exclusive `flock`) while a job writes: a second writer fails
  at once with the holder's pid and host. The kernel drops the lock of a killed
  process, so a stale lock never blocks; where the filesystem has no `flock`, the
  pid/host written in the file decide (a dead pid on this host is stale).
- a stop signal ends the job with `JobInterrupted` (exit status 128 + signal) after
  its checkpoint; `adjust info` shows complete / interrupted at step N of M.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from adjust.fileio import WriteError, make_dirs, write_text
from adjust.identity import check_base, short

JOB_NAME = "job.json"
LOCK_NAME = "job.lock"
# What each kind of job leaves in its folder when it has no job.json (older runs).
_ARCHITECTURE_KIND = {"MaskedDiffusionLM": "train-base", "AdjustSampler": "train-sampler", "Judge": "train-judge"}
_WHAT = {"train-base": "a base model", "train-sampler": "an ADJUST sampler", "data": "trajectories",
         "train-judge": "a judge model"}
# How a mismatch in each input section reads.
_DIFFERS = {"train": "was written with other training settings", "settings": "holds trajectories made with other "
            "settings", "data": "was trained on other data", "prompts": "was made from other prompts",
            "model": "holds a model of another shape"}
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class JobInterrupted(Exception):
    """A stop signal ended the job after its checkpoint; rerunning the same command continues it."""

    def __init__(self, done: int, total: int, unit: str, signum: int) -> None:
        super().__init__(f"interrupted at {unit} {done} of {total}; rerun the same command to continue")
        self.done, self.total, self.exit_code = done, total, 128 + signum


class FolderInUse(OSError):
    """Another process holds the folder's lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.EBUSY


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class FolderLock:
    """Exclusive lock of an output folder (`job.lock`), holding the owner's pid, host and start time."""

    _held: dict[str, "FolderLock"] = {}  # by folder: a lock left by an earlier job of this process

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.fd: int | None = None

    def _holder(self, fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (ValueError, OSError):
            return {}

    def acquire(self) -> None:
        key = os.path.realpath(self.folder)
        if key in FolderLock._held:  # same process: an earlier job here ended by an exception
            FolderLock._held.pop(key).release()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WriteError(self.folder, e.strerror or str(e), e.errno) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise FolderInUse(self._busy(holder)) from None
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                os.close(fd)
                raise
            holder = self._holder(fd)  # no flock on this filesystem: trust the recorded pid/host
            if holder and (holder.get("host") != socket.gethostname() or _alive(int(holder.get("pid", -1)))):
                os.close(fd)
                raise FolderInUse(self._busy(holder)) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError as e:  # a full disk
            os.close(fd)
            raise WriteError(self.path, "no space left on the device" if e.errno == errno.ENOSPC else e.strerror,
                             e.errno) from None
        self.fd = fd
        FolderLock._held[key] = self

    def _busy(self, holder: dict) -> str:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
        return (f"{self.folder}: in use by another job ({who}); wait for it to finish or use another --out "
                f"(if no such process runs, delete {self.path})")

    def release(self) -> None:
        if self.fd is None:
            return
        FolderLock._held.pop(os.path.realpath(self.folder), None)
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    @staticmethod
    def holder(folder: Path) -> dict | None:
        """The live holder of `folder`'s lock ({pid, host, since}), or None. Never creates a file."""
        path = Path(folder) / LOCK_NAME
        if not path.is_file():
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except ValueError:
            info = {}
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            held = False
        except BlockingIOError:
            held = True
        except OSError:  # no flock: the pid decides
            held = bool(info) and (info.get("host") != socket.gethostname() or _alive(int(info.get("pid", -1))))
        finally:
            os.close(fd)
        return info if held else None


def release_locks() -> None:
    """Release every folder lock this process holds (the CLI does at exit, whatever ended the command)."""
    for lock in list(FolderLock._held.values()):
        lock.release()


def read_job(folder: str | Path) -> dict | None:
    """The folder's job record (job.json), or None."""
    path = Path(folder) / JOB_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise ValueError(f"{path}: not valid JSON; the job record is damaged (delete it to start over)") from None


def status_line(folder: str | Path) -> str | None:
    """'complete (step 400 of 400)', 'interrupted at step 25 of 400; ...', 'running ...', or None."""
    rec = read_job(folder)
    if rec is None:
        return None
    where = f"{rec['unit']} {rec['done']} of {rec['total']}"
    if rec["status"] == "complete":
        return f"complete ({where})"
    if rec["status"] == "running":
        holder = FolderLock.holder(Path(folder))
        if holder is not None:
            return f"running: at {where} (pid {holder.get('pid')} on {holder.get('host')})"
        return f"interrupted at {where} (its process was killed or failed); rerun the same command to continue"
    return f"interrupted at {where}; rerun the same command to continue"


def folder_kind(folder: Path) -> str | None:
    """Which kind of job wrote `folder` (from job.json, else its files), or None for a folder of other files."""
    rec = read_job(folder)
    if rec is not None:
        return rec["kind"]
    config = folder / "config.json"
    if config.is_file():
        try:
            return _ARCHITECTURE_KIND.get(json.loads(config.read_text()).get("architecture"), "unknown")
        except (ValueError, AttributeError):
            return "unknown"
    if any(folder.glob("manifest*.json")):
        return "data"
    return None


def _first_difference(old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return f"{k}: {_show(old.get(k))} recorded, {_show(new.get(k))} given"
    return f"{_show(old)} recorded, {_show(new)} given"


def _show(v) -> str:
    return short(v) if isinstance(v, str) and len(v) == 64 else repr(v)


def check_folder(folder: Path, kind: str) -> None:
    """Refuse an output folder that is a file or holds another kind of job's output."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output folder {folder} is a file, not a folder")
    if folder.is_dir():
        found = folder_kind(folder)
        if found is not None and found != kind:
            what = _WHAT.get(found, "files of another kind")
            raise ValueError(f"output folder {folder} holds {what} (adjust {found}), not the output of adjust "
                             f"{kind}; use another --out")


@dataclass
class Job:
    """The running job of a folder (see the module docstring); `begin` makes one."""

    folder: Path
    record: dict
    writer: bool
    lock: FolderLock | None = None
    already_complete: bool = False

    @classmethod
    def begin(
        cls,
        folder: str | Path,
        kind: str,
        inputs: dict,
        total: int,
        unit: str = "step",
        total_flag: str = "--steps",
        writer: bool = True,
        allow_base_mismatch: bool = False,
        length_fields: tuple[str, ...] = (),
        added_defaults: dict[str, dict] | None = None,
    ) -> "Job":
        """Check `folder` for a job of `kind` with `inputs` and `total` and take its lock.

        The record is written at the first `checkpoint`, so nothing is written before
        every check passed and a job that fails before its first checkpoint leaves none.
        `writer=False` (the non-main ranks of a distributed job) checks but neither locks
        nor writes. An `inputs` key "base" is compared with `adjust.identity.check_base`; the others must be equal,
        except the `length_fields` of dict inputs when `total` changes (they derive from it,
        like the warm-up); whether that total is allowed is then the extension rule's call.
        `added_defaults` {input key: {setting: default}}: a recorded dict input that lacks a setting (a record
        written before the setting existed) reads it at this default, so a run an upgrade interrupted resumes
        unless the setting is now given another value (settings are added with the old behaviour as default).
        """
        folder = Path(folder)
        check_folder(folder, kind)
        if writer:
            make_dirs(folder)
        lock = FolderLock(folder) if writer else None
        if lock is not None:
            lock.acquire()
        try:
            job = cls(folder, {}, writer, lock)
            job._start(kind, inputs, total, unit, total_flag, allow_base_mismatch, length_fields, added_defaults or {})
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return job

    def _start(self, kind, inputs, total, unit, total_flag, allow, length_fields, added_defaults) -> None:
        old = read_job(self.folder)
        event = "start"
        if old is not None:
            other_total = total != old["total"]  # the total rule below decides; what derives from it may differ

            def comparable(v):
                return {k: x for k, x in v.items() if k not in length_fields} if other_total and isinstance(v, dict) else v

            for key, value in inputs.items():
                recorded = old["inputs"].get(key)
                if isinstance(recorded, dict) and isinstance(value, dict) and key in added_defaults:
                    recorded = {**{k: d for k, d in added_defaults[key].items() if k in value}, **recorded}
                if key == "base":
                    check_base(recorded, value, f"{self.folder}", allow)
                elif comparable(recorded) != comparable(value):
                    phrase = _DIFFERS.get(key, f"was made with another {key}")
                    raise ValueError(f"{self.folder}: {phrase} ({_first_difference(recorded, value)}); "
                                     "use a new --out, or the same inputs to continue")
            done = old["done"]
            if old["status"] == "complete":
                if total < done:
                    raise ValueError(f"{self.folder}: already complete with {done} {unit}s; {total_flag} {total} "
                                     f"is fewer (use a new --out)")
                if total == done:
                    self.already_complete = True
                event = "extend" if total > done else event
            elif total != old["total"]:
                raise ValueError(
                    f"{self.folder}: interrupted at {unit} {done} of {old['total']}; rerun with {total_flag} "
                    f"{old['total']} to continue (once complete, a larger {total_flag} extends it)")
            if event == "start":
                event = "resume"
        if self.already_complete:
            self.record = old
            return
        history = list(old.get("history", [])) if old else []
        done = old["done"] if old else 0
        history.append({"event": event, "at": done, "total": total, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        # Written with the first checkpoint: a job that fails before it leaves no record to refuse a retry with.
        self.record = {"kind": kind, "status": "running", "done": done, "total": total, "unit": unit,
                       "inputs": inputs, "history": history}

    def reopen(self, done: int) -> None:
        """Resume a job recorded complete whose outputs turn out incomplete (files deleted since): at `done`."""
        if self.already_complete:
            self.already_complete = False
            event = {"event": "resume", "at": done, "total": self.record["total"],
                     "time": time.strftime("%Y-%m-%d %H:%M:%S")}
            self.record = {**self.record, "status": "running", "done": done,
                           "history": [*self.record.get("history", []), event]}

    def _write(self) -> None:
        if self.writer:
            write_text(self.folder / JOB_NAME, json.dumps(self.record, indent=1) + "\n")

    @property
    def done(self) -> int:
        return self.record["done"]

    def checkpoint(self, done: int) -> None:
        """Record that a checkpoint at `done` steps (or sequences) is on disk."""
        self.record["done"] = done
        self._write()

    def end(self, stop=None) -> None:
        """Mark the job complete or interrupted and release the lock; raise `JobInterrupted` after a stop signal."""
        finished = self.record["done"] >= self.record["total"]
        if not self.already_complete:
            self.record["status"] = "complete" if finished else "interrupted"
            self._write()
        if self.lock is not None:
            self.lock.release()
        if not finished and stop is not None and stop.requested:
            raise JobInterrupted(self.record["done"], self.record["total"], self.record["unit"], stop.signum)
