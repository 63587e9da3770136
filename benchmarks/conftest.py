"""Session plumbing of the benchmarks: options, the measured ceilings, model caches, result rows, report.

Options (besides pytest-benchmark's):
    --bench-threads N     torch CPU threads (default: torch's). On a machine shared with other jobs,
                          1 thread avoids OpenMP barrier stalls (2 threads ran ~10x slower here).
    --bench-results DIR   where ``<machine>.json`` / ``.md`` go (default ``benchmarks/results``).
Environment: ``ADJUST_BENCH_SHAPES=synthetic,dream7b`` runs only those shapes (and names the results
``<machine>-synthetic+dream7b.*``, so runs of separate shapes do not overwrite each other).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import report
from benchmarks.ceilings import Ceilings, measure
from benchmarks.shapes import DEVICE, DTYPE, SHAPES, ModelShape, build_model, build_pass_parts


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("adjust benchmarks")
    group.addoption("--bench-threads", type=int, default=None, help="torch CPU threads for the benchmarks")
    group.addoption("--bench-results", default=str(report.RESULTS_DIR), help="directory for the results files")


class Recorder:
    """Rows of one session, written by `report.finish` at its end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.results: dict[str, Any] = {
            "environment": report.environment(),
            "command": "python -m pytest " + " ".join(config.invocation_params.args),
            "ceilings": None,
            "generate": [],
            "kernels": [],
            "paired": [],
            "base_cache": [],
            "skipped": [],
        }
        self.paths: tuple[Path, Path] | None = None

    @staticmethod
    def _stats(benchmark, inner: int = 1) -> dict[str, Any]:
        s = benchmark.stats.stats
        return {"median_s": s.median / inner, "min_s": s.min / inner, "iqr_s": s.iqr / inner,
                "rounds": s.rounds, "inner": inner}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep every skip and its reason (registered as a plugin in `pytest_configure`)."""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            self.results["skipped"].append({"test": report.nodeid, "reason": reason})

    def generate(self, benchmark, **fields: Any) -> None:
        if getattr(benchmark, "stats", None) is not None:  # None under --benchmark-disable
            self.results["generate"].append({**fields, **self._stats(benchmark)})

    def kernel(self, benchmark, inner: int, **fields: Any) -> None:
        if getattr(benchmark, "stats", None) is not None:
            self.results["kernels"].append({**fields, **self._stats(benchmark, inner)})


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--bench-threads", default=None)
    if threads:
        torch.set_num_threads(threads)
    config._adjust_recorder = Recorder(config)  # type: ignore[attr-defined]
    config.pluginmanager.register(config._adjust_recorder, "adjust-bench-recorder")  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session) -> None:
    rec: Recorder = session.config._adjust_recorder  # type: ignore[attr-defined]
    if any(rec.results[k] for k in ("generate", "kernels", "paired", "base_cache")):
        only = os.environ.get("ADJUST_BENCH_SHAPES", "").replace(",", "+")
        tag = report.machine_tag(rec.results["environment"]) + (f"-{only}" if only else "")
        rec.paths = report.finish(rec.results, Path(session.config.getoption("--bench-results")), tag)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    """The results files, then the headline: the last lines of the run."""
    rec: Recorder = terminalreporter.config._adjust_recorder
    if rec.paths is None:
        return
    terminalreporter.write_sep("=", "adjust benchmarks")
    for p in rec.paths:
        terminalreporter.write_line(f"wrote {p}")
    for line in rec.results["headline"]:
        terminalreporter.write_line(line)


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def record(pytestconfig: pytest.Config) -> Recorder:
    return pytestconfig._adjust_recorder  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def ceilings(record: Recorder) -> Ceilings:
    """Bandwidth and matmul rate of this machine, measured once per session (recorded in the results)."""
    c = measure(DEVICE, DTYPE)
    record.results["ceilings"] = c.to_dict()
    return c


@pytest.fixture(scope="session")
def benchmark_max_time(pytestconfig: pytest.Config) -> float:
    """Seconds of timed rounds to aim for per end-to-end case: ``--benchmark-max-time``."""
    return float(pytestconfig.getoption("benchmark_max_time"))


@pytest.fixture(scope="session")
def rounds(pytestconfig: pytest.Config) -> int:
    """Timed rounds of the slow (pedantic) benchmarks: ``--benchmark-min-rounds``."""
    return max(1, int(pytestconfig.getoption("benchmark_min_rounds")))


class _Cache:
    """Keeps the most recently built objects of one kind; a new key frees the old ones (7B shapes on GPU)."""

    def __init__(self, build):
        self.build, self.key, self.value = build, None, None

    def get(self, key, *args):
        if key != self.key:
            self.key, self.value = None, None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.value, self.key = self.build(*args), key
        return self.value


@pytest.fixture(scope="session")
def models() -> _Cache:
    """``models.get(name, shape)`` -> (MaskedDiffusionLM, AdjustSampler) on the benchmark device."""
    return _Cache(lambda shape: build_model(shape))


@pytest.fixture(scope="session")
def pass_parts() -> _Cache:
    """``pass_parts.get(name, shape)`` -> (HeadAdapter, AdjustSampler) with random E, W and sampler."""
    return _Cache(lambda shape: build_pass_parts(shape))


def shape_of(name: str) -> ModelShape:
    return SHAPES[name]
