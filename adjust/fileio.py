"""Atomic file writes with one-line errors that name the file.

Every file the package writes (weights, configs, training state, trajectory shards,
manifests, job records) goes through `atomic_write`: the bytes go to a temp file with a
unique name in the same folder, which is then renamed over the target, so a kill at any
moment leaves the old file or the new one, never a torn one, and two processes never
write to the same temp file. A failed write removes its temp file and raises
`WriteError` naming the target. A full disk is recognised even where the library
hides the errno (torch.save reports only "unexpected pos"): by the free space left at
the moment of the failure.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

_DISK_FULL_BYTES = 1 << 20  # under 1 MiB free right after a failed write: the disk is full
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: temp files are made 0600, the files they become get the usual mode


class WriteError(OSError):
    """A file could not be written; the message names it and says why in one line."""

    def __init__(self, path: Path, reason: str, code: int | None) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.errno = code  # set after: a one-argument OSError keeps its message as is
        self.path = path


def _reason(exc: BaseException, folder: Path) -> str:
    text = str(exc)
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in text
    if not full:
        try:
            full = shutil.disk_usage(folder).free < _DISK_FULL_BYTES
        except OSError:
            pass
    if full:
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a fresh temp file beside `path`, then rename it to `path`.

    Raises `WriteError` (the temp file removed) when the folder cannot take the file.
    """
    atomic_write_all([(Path(path), write)])


def atomic_write_all(files: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """`atomic_write` for files that belong together: all are written (in order) before any is renamed."""
    temps: list[Path] = []
    try:
        for path, write in files:
            try:
                fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            except OSError as e:
                raise WriteError(path, _reason(e, path.parent), e.errno) from None
            os.close(fd)
            temps.append(Path(name))
            try:
                write(temps[-1])
            except Exception as e:  # safetensors and torch wrap OS errors in their own types
                reason = _reason(e, path.parent)
                code = errno.ENOSPC if reason.startswith("no space") else getattr(e, "errno", None)
                raise WriteError(path, reason, code) from e
        for (path, _), tmp in zip(files, temps):
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
    finally:  # after a failure or a signal: no temp file left behind
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def make_dirs(path: str | Path) -> None:
    """`mkdir -p path`, with a `WriteError` naming it (read-only filesystem, a file in the way, ...)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(Path(path), e.strerror or str(e), e.errno) from None


def write_text(path: str | Path, text: str) -> None:
    """Atomically write `text` (UTF-8) to `path`."""
    atomic_write(path, lambda f: f.write_text(text, encoding="utf-8"))


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
