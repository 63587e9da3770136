"""Progress bars that do not flood logs.

On a terminal `progress_bar` is a normal tqdm bar. When stderr is redirected (a cluster
job's log, `cmd 2> log`), a bar redrawn on every update would write thousands of
carriage-return frames into the file; there the same bar prints one plain line at most
every `LOG_INTERVAL` seconds (and its final state), so a log stays readable with `tail`.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines in a redirected log


class _LineWriter:
    """A file for tqdm that turns each redrawn frame into one newline-terminated line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        text = s.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """A tqdm bar whose `set_postfix` waits for the next throttled line instead of forcing one
    (tqdm's default `refresh=True` would print a line on every call, i.e. on every step)."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress_bar(iterable=None, **kw) -> tqdm:
    """`tqdm(iterable, **kw)`, throttled to plain periodic lines when stderr is not a terminal."""
    stream = kw.pop("file", sys.stderr)
    if not kw.get("disable") and not (hasattr(stream, "isatty") and stream.isatty()):
        kw.setdefault("mininterval", LOG_INTERVAL)
        kw.setdefault("maxinterval", LOG_INTERVAL)
        kw.update(file=_LineWriter(stream), dynamic_ncols=False, ncols=100)
        return _LogBar(iterable, **kw)
    return tqdm(iterable, file=stream, **kw)
