"""Benchmark results: the environment, the derived ratios, JSON + a markdown table, and the headline.

The conftest hook collects one row per benchmark and calls :func:`finish` at the end of the session.
Re-render a results file (after editing this module) with

    PYTHONPATH=. python -m benchmarks.report benchmarks/results/cpu.json
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
SHAPE_PREFERENCE = ("dream7b", "llada8b", "mini-8L", "synthetic", "kern-512")
FAST_FIRST = ("triton-graph", "triton", "cpp", "torch", "reference", "module")

Row = dict[str, Any]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Machine, library versions and git state of this run."""
    import triton

    try:
        import pytest_benchmark
        pb = pytest_benchmark.__version__
    except ImportError:  # pragma: no cover - the benchmarks need it
        pb = None
    env: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "pytest_benchmark": pb,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), gpu_sms=p.multi_processor_count,
                   cuda=torch.version.cuda)
    return env


def machine_tag(env: dict[str, Any]) -> str:
    """File stem for this machine's results: ``cpu`` or ``cuda-<gpu name>``."""
    if env.get("device") != "cuda":
        return "cpu"
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower()).strip("-")


# -- derived ratios (all from rows of the same run) ---------------------------------------------------


def _e2e_key(r: Row) -> tuple:
    return r["shape"], r["batch"], r["gen_len"]


def _reference_of(variant: str) -> str:
    """The variant a kernel row is compared with: ``reference`` plus the variant's mode suffixes
    (``triton-top64-graph`` → ``reference-top64``, ``triton-ctx`` → ``reference-ctx``)."""
    return "-".join(["reference"] + [m for m in variant.split("-")[1:] if m != "graph"])


def derive(results: dict[str, Any]) -> None:
    """Add tokens/s, ceilings and same-run ratios to the rows, in place."""
    gen = results.get("generate", [])
    by = {(_e2e_key(r), r["method"], r["K"], r["backend"]): r for r in gen}
    for r in gen:
        r["tokens_per_s"] = r["tokens"] / r["median_s"]
        r["ceiling_tokens_per_s"] = r["tokens"] / r["floor_s"]
        r["pct_of_ceiling"] = 100.0 * r["floor_s"] / r["median_s"]
        k1 = by.get((_e2e_key(r), "k1", 1, r["backend"]))
        r["vs_k1"] = k1["median_s"] / r["median_s"] if k1 else None
        par = by.get((_e2e_key(r), "parallel", r["K"], r["backend"])) if r["method"].startswith("adjust") else None
        r["adjust_over_parallel"] = par["median_s"] / r["median_s"] if par else None
        r["ceiling_adjust_over_parallel"] = par["floor_s"] / r["floor_s"] if par else None
        ref = by.get((_e2e_key(r), r["method"], r["K"], "torch"))
        r["vs_torch"] = ref["median_s"] / r["median_s"] if ref else None
    kern = results.get("kernels", [])
    kby = {(r["shape"], r["batch"], r["seq_len"], r["candidates"], r["op"], r["variant"]): r for r in kern}
    for r in kern:
        r["over_floor"] = r["median_s"] / r["floor_s"]
        ref = kby.get((r["shape"], r["batch"], r["seq_len"], r["candidates"], r["op"], _reference_of(r["variant"])))
        r["vs_reference"] = ref["median_s"] / r["median_s"] if ref else None


def headline(results: dict[str, Any]) -> list[str]:
    """ADJUST/parallel tokens/s at K = 4 and the sampler-pass time over its floor, on the largest shape run.

    The ratio comes from the interleaved pairs (``test_adjust_vs_parallel``) when they ran, else from
    the separate end-to-end medians."""
    lines: list[str] = []
    paired = results.get("paired", [])
    gen = [r for r in results.get("generate", []) if r["K"] == 4 and r.get("adjust_over_parallel")]
    for shape in SHAPE_PREFERENCE:
        rows = [r for r in paired if r["shape"] == shape]
        if rows:
            for r in sorted(rows, key=lambda r: r["batch"]):
                lines.append(
                    f"ADJUST/parallel tokens/s at K=4 ({shape}, B={r['batch']}, N={r['gen_len']}, "
                    f"backend={r['backend']}): {r['ratio_median']:.3f}x (median of {r['pairs']} interleaved pairs, "
                    f"IQR {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}; floor ceiling {r['ceiling_ratio']:.3f}x)")
                if "restricted_ratio_median" in r:
                    lines.append(
                        f"restricted ADJUST (top-{r['restricted_tokens']} ids)/parallel at K=4 ({shape}, B={r['batch']}, "
                        f"N={r['gen_len']}, backend={r['backend']}): {r['restricted_ratio_median']:.3f}x (IQR "
                        f"{r['restricted_ratio_q1']:.3f}-{r['restricted_ratio_q3']:.3f}; floor ceiling "
                        f"{r['restricted_ceiling_ratio']:.3f}x)")
            break
        rows = [r for r in gen if r["shape"] == shape]
        if not rows:
            continue
        n = max(r["gen_len"] for r in rows)
        backend = next(b for b in FAST_FIRST if any(r["backend"] == b and r["gen_len"] == n for r in rows))
        picked = sorted((r for r in rows if r["gen_len"] == n and r["backend"] == backend),
                        key=lambda r: (r["method"] != "adjust", r["batch"]))
        for r in picked:
            label = "ADJUST" if r["method"] == "adjust" else f"approximate ADJUST ({r['method']})"
            lines.append(
                f"{label}/parallel tokens/s at K=4 ({shape}, B={r['batch']}, N={n}, backend={backend}): "
                f"{r['adjust_over_parallel']:.3f}x (floor ceiling {r['ceiling_adjust_over_parallel']:.3f}x; "
                f"ADJUST {r['tokens_per_s']:.1f} tok/s)")
        break
    for r in results.get("base_cache", []):
        if r["base_cache"] is not None and r["method"] in ("parallel", "adjust"):
            lines.append(
                f"{r['base_cache']} base cache, {r['method']} K={r['K']} ({r['shape']}, B={r['batch']}, "
                f"prompt {r['prompt_len']}, N={r['gen_len']} in blocks of {r['block_length']}, backend={r['backend']}): "
                f"{r['speedup_median']:.2f}x tokens/s over no cache (median of {r['rounds']} rounds, IQR "
                f"{r['speedup_q1']:.2f}-{r['speedup_q3']:.2f}; floor ratio {r['floor_speedup']:.2f}x)")
    kern = [r for r in results.get("kernels", []) if r["op"] == "sampler_pass" and r["variant"] in FAST_FIRST]
    for shape in SHAPE_PREFERENCE:
        rows = [r for r in kern if r["shape"] == shape]
        if not rows:
            continue
        variant = next(v for v in FAST_FIRST if any(r["variant"] == v for r in rows))
        for r in sorted((r for r in rows if r["variant"] == variant), key=lambda r: (r["batch"], r["seq_len"])):
            lines.append(
                f"sampler pass (g + LM head/score/sample) {shape} B={r['batch']} L={r['seq_len']} "
                f"C={r['candidates']}, {variant}: {r['median_s'] * 1e3:.3f} ms = {r['over_floor']:.1f}x its floor "
                f"{r['floor_s'] * 1e3:.3f} ms ({r['bound']}-bound)")
        break
    return lines


# -- rendering --------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "" if x is None else format(x, fmt)


def render_markdown(results: dict[str, Any]) -> str:
    env, c = results["environment"], results.get("ceilings") or {}
    dev = env.get("gpu") or env.get("cpu")
    out = [
        f"# Benchmark results: {machine_tag(env)}",
        "",
        (f"- machine: {env['hostname']} ({dev}; {env['cpu_count']} CPUs, torch threads {env['torch_threads']}); "
        f"load average at start {', '.join(f'{x:.1f}' for x in env['loadavg_start'])}, "
        f"at end {', '.join(f'{x:.1f}' for x in env.get('loadavg_end', []))}"),
        (f"- torch {env['torch']}, triton {env['triton']}, pytest-benchmark {env['pytest_benchmark']}, "
        f"python {env['python']}; git {env['git_commit'][:12]}{' (dirty tree)' if env['git_dirty'] else ''}; "
        f"{env['timestamp']}"),
        f"- command: `{results.get('command', '')}`",
    ]
    if c:
        out.append(f"- ceilings measured in this run ({c['dtype']}): bandwidth {c['bandwidth'] / 1e9:.1f} GB/s "
                   f"(copy of {c['copy_bytes'] >> 20} MiB), matmul {c['flop_rate'] / 1e9:.1f} GFLOP/s "
                   f"(n = {c['matmul_n']}); medians of {len(c['bandwidth_samples'])}")
    out += ["", "## Headline", ""] + [f"- {line}" for line in results.get("headline", [])]
    gen = results.get("generate", [])
    if gen:
        out += ["", "## End-to-end generation", "",
                ("Times are medians of the rounds after one warm-up; ratios compare rows of this run: `vs K=1` and "
                "`vs torch` are speed-ups (time ratios), `ADJ/par` = ADJUST tokens/s over parallel tokens/s at the "
                "same K, shape, batch, length and backend; `ceil` = the same from the floors."), "",
                ("| shape | B | N | method | K | backend | base fwd | sampler passes | tokens | median s | tok/s | "
                "vs K=1 | ADJ/par | ceil ADJ/par | vs torch | floor tok/s | % of ceiling |"),
                "|" + " --- |" * 17]
        for r in gen:
            out.append(
                f"| {r['shape']} | {r['batch']} | {r['gen_len']} | {r['method']} | {r['K']} | {r['backend']} | "
                f"{r['base_forwards']} | {r['sampler_passes']} | {r['tokens']} | {r['median_s']:.4f} | "
                f"{r['tokens_per_s']:.1f} | {_f(r['vs_k1'], '.2f')} | {_f(r['adjust_over_parallel'])} | "
                f"{_f(r['ceiling_adjust_over_parallel'])} | {_f(r['vs_torch'], '.2f')} | "
                f"{r['ceiling_tokens_per_s']:.0f} | {r['pct_of_ceiling']:.1f} |")
    paired = results.get("paired", [])
    if paired:
        out += ["", "## ADJUST vs parallel, interleaved", "",
                ("Each round runs parallel K and ADJUST K back to back (alternating which goes first), so both "
                "see the same load; `ratio` = median over rounds of t_parallel / t_ADJUST (= ADJUST tokens/s over "
                "parallel tokens/s); `ceiling` = the same from the floors; `top-k ratio`: the same for "
                "candidate-restricted ADJUST, where it ran in the rounds."), "",
                ("| shape | B | N | K | backend | rounds | ratio | IQR | ceiling | top-k ratio | top-k ceiling | "
                 "parallel median s | ADJUST median s |"),
                "|" + " --- |" * 13]
        for r in paired:
            out.append(
                f"| {r['shape']} | {r['batch']} | {r['gen_len']} | {r['K']} | {r['backend']} | {r['pairs']} | "
                f"{r['ratio_median']:.3f} | {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f} | {r['ceiling_ratio']:.3f} | "
                f"{_f(r.get('restricted_ratio_median'))} | {_f(r.get('restricted_ceiling_ratio'))} | "
                f"{r['parallel_median_s']:.4f} | {r['adjust_median_s']:.4f} |")
    cached = results.get("base_cache", [])
    if cached:
        out += ["", "## Base-model block cache", "",
                ("Each round runs every method with no cache, the prefix and the dual cache (order reversed every "
                 "round); `speed-up` = median over rounds of t_uncached / t_cached (= cached tokens/s over "
                 "uncached), `floor` = the same ratio of the floors; `cached fwd` = base forwards over the block's "
                 "window only."), "",
                ("| shape | prompt | N | block | method | K | backend | cache | rounds | base fwd | cached fwd | "
                 "median s | tok/s | speed-up | IQR | floor |"),
                "|" + " --- |" * 16]
        for r in cached:
            iqr = f"{r['speedup_q1']:.2f}-{r['speedup_q3']:.2f}" if r["base_cache"] else ""
            out.append(
                f"| {r['shape']} | {r['prompt_len']} | {r['gen_len']} | {r['block_length']} | {r['method']} | "
                f"{r['K']} | {r['backend']} | {r['base_cache'] or 'none'} | {r['rounds']} | {r['base_forwards']} | "
                f"{r['cached_forwards']} | {r['median_s']:.3f} | {r['tokens_per_s']:.1f} | "
                f"{_f(r.get('speedup_median'), '.2f')} | {iqr} | {_f(r.get('floor_speedup'), '.2f')} |")
    kern = results.get("kernels", [])
    if kern:
        out += ["", "## Kernels", "",
                ("`floor` = max(bytes / bandwidth, FLOPs / matmul rate) with this run's ceilings (sums over "
                "sequential units); `× floor` = median / floor; `vs ref` = speed-up over the `reference` variant."), "",
                "| shape | B | L | C | op | variant | median ms | floor ms | bound | × floor | vs ref | MB moved | GFLOP |",
                "|" + " --- |" * 13]
        for r in kern:
            out.append(
                f"| {r['shape']} | {r['batch']} | {r['seq_len']} | {r['candidates']} | {r['op']} | {r['variant']} | "
                f"{r['median_s'] * 1e3:.3f} | {r['floor_s'] * 1e3:.4f} | {r['bound']} | {r['over_floor']:.1f} | "
                f"{_f(r['vs_reference'], '.2f')} | {r['bytes'] / 1e6:.1f} | {r['flops'] / 1e9:.3f} |")
    skipped = results.get("skipped", [])
    if skipped:
        reasons: dict[str, int] = {}
        for s in skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        out += ["", "## Skipped", ""] + [f"- {n} × {reason}" for reason, n in sorted(reasons.items())]
    return "\n".join(out) + "\n"


def finish(results: dict[str, Any], out_dir: Path = RESULTS_DIR, tag: str | None = None) -> tuple[Path, Path]:
    """Derive, add the headline, write ``<tag>.json`` and ``<tag>.md``; returns both paths."""
    results["environment"]["loadavg_end"] = list(os.getloadavg())
    derive(results)
    results["headline"] = headline(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = tag or machine_tag(results["environment"])
    jpath, mpath = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    jpath.write_text(json.dumps(results, indent=1) + "\n")
    mpath.write_text(render_markdown(results))
    return jpath, mpath


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m benchmarks.report RESULTS.json\n")
        return 2
    path = Path(argv[0])
    results = json.loads(path.read_text())
    derive(results)
    results["headline"] = headline(results)
    path.write_text(json.dumps(results, indent=1) + "\n")
    path.with_suffix(".md").write_text(render_markdown(results))
    sys.stdout.write("\n".join(results["headline"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
