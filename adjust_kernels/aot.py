"""Compile every Triton kernel launch of the package ahead of time for real GPUs, with no GPU and no driver.

    python -m adjust_kernels.aot --arch 90 [--arch 80] [--sweep ci|full] [--nvcc] [--jobs 2]

Each op module's ``compile_specs(problem, sm_count)`` lists the launches its wrapper makes at a problem
of ``aot_shapes.aot_problems(sweep)``, built by the wrapper's own code from ``meta`` tensors; this
command derives each launch's Triton signature the way the JIT does (the same argument specialisation:
dtypes, 16-divisible integers and pointers, integers equal to 1 as constants), compiles it with the
public ``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))``
through TTGIR, PTX and the ptxas bundled in the triton wheel, and prints a table: registers, spill bytes
(ptxas), shared memory (what the launch asks for), the matrix instructions (wgmma / mma / fma), approximate
fp32 divisions left in the PTX, compile seconds. ``--nvcc`` also compiles ``csrc/*.cu`` (``aot_nvcc``).

It exits non-zero on a compile error, on spills above ``--spill-budget`` (bf16/fp16 variants at the real
models' shapes; 0 bytes by default) or ``--other-spill-budget`` (the rest), or on shared memory above the
architecture's per-block limit. The interpreter tests (``TRITON_INTERPRET=1``) cannot see any of these.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from adjust_kernels.aot_shapes import AotProblem, aot_problems
from adjust_kernels.launch import Launch

# Largest dynamic shared memory one block may opt into (CUDA C++ Programming Guide, compute capabilities).
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
# SM counts the launch configurations are sized for (they pick vocabulary splits per SM): A100 (80),
# RTX A6000 (86), RTX 4090 (89), H100 / H200 (90).
SM_COUNT = {80: 108, 86: 84, 89: 128, 90: 132}
KERNEL_MODULES = (
    "adjust_kernels.sampler_input",
    "adjust_kernels.rmsnorm",
    "adjust_kernels.rope",
    "adjust_kernels.swiglu",
    "adjust_kernels.lm_head_sample",
)


@dataclass
class Entry:
    """One distinct compile: a launch and every (problem, variant) that launches exactly it."""

    kernel: str
    launch: Launch
    problems: list[AotProblem] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)

    @property
    def production(self) -> bool:
        return any(p.production for p in self.problems)


@dataclass(frozen=True)
class Measure:
    """What compiling one launch for one architecture gave (or the error that stopped it)."""

    seconds: float
    error: str = ""
    registers: int = 0
    spill_bytes: int = 0  # spill stores + spill loads, bytes per thread (ptxas -v)
    shared: int = 0  # bytes of shared memory the launch requests
    mma: str = "-"
    approx_div: int = 0  # div.full.f32 / div.approx.f32 instructions in the PTX


@dataclass(frozen=True)
class Result:
    arch: int
    entry: Entry
    measure: Measure


def entries(modules: Sequence[str], sweep: str, sm_count: int, kernels: Sequence[str] = ()) -> list[Entry]:
    """Every module's compile specs at every problem of ``sweep`` (only those of ``kernels``, when named),
    one Entry per distinct compile (e.g. the finalize kernel, which does not depend on the dtype, is
    compiled once for bf16 and fp16)."""
    out: dict[tuple, Entry] = {}
    for name in modules:
        mod = importlib.import_module(name)
        for problem in aot_problems(sweep):
            for spec in mod.compile_specs(problem, sm_count):
                if kernels and spec.kernel_name.strip("_") not in kernels:
                    continue
                key = (spec.kernel_name, repr(source_args(spec.launch)), repr(sorted(spec.launch.config.options.items())))
                e = out.setdefault(key, Entry(spec.kernel_name, spec.launch))
                if problem not in e.problems:
                    e.problems.append(problem)
                if spec.variant not in e.variants:
                    e.variants.append(spec.variant)
    return list(out.values())


def source_args(launch: Launch) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of ``launch`` as ``JITFunction.run`` derives them from its arguments:
    the same ``native_specialize_impl`` (dtypes, 16-divisible integers and pointers, integers equal to 1
    as constants), so the AOT compile is the one the launch would JIT."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kernel, values = launch.kernel, list(launch.args)
    given = dict(launch.config.constexprs)
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(kernel.params):
        if p.is_constexpr:
            if p.name not in given:
                raise ValueError(f"{kernel.fn.__name__}: constexpr {p.name} missing from the launch config")
            ty, spec = "constexpr", given.pop(p.name)
        else:
            if not values:
                raise ValueError(f"{kernel.fn.__name__}: too few arguments (no value for {p.name})")
            ty, spec = native_specialize_impl(BaseBackend, values.pop(0), p.is_const, not p.do_not_specialize,
                                              not p.do_not_specialize_on_alignment)
        signature[p.name] = ty
        if ty == "constexpr":
            constexprs[(i,)] = spec
        elif isinstance(spec, str):
            attrs[(i,)] = BaseBackend.parse_attr(spec)
    if values or given:
        raise ValueError(f"{kernel.fn.__name__}: unused launch arguments {values} / constexprs {sorted(given)}")
    return signature, constexprs, attrs


_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def _mma_kind(asm: dict) -> str:
    ptx = asm["ptx"]
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "fma" if "tt.dot" in asm["ttgir"] else "-"


def compile_launch(launch: Launch, arch: int) -> Measure:
    """Compile ``launch`` for ``sm_<arch>`` with ``triton.compile``; registers and spills from ptxas -v.
    Needs a fresh ``TRITON_CACHE_DIR`` (a cache hit runs no ptxas, so reports nothing)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs = source_args(launch)
    src = ASTSource(launch.kernel, signature, constexprs, attrs)
    log = io.StringIO()
    t0 = time.perf_counter()
    try:
        knobs.nvidia.dump_ptxas_log = True  # make_cubin prints ptxas -v's report
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=launch.config.options)
    except Exception as err:  # a compile error is a result here, reported with the kernel's variant
        first = " / ".join(line.strip() for line in str(err).strip().splitlines()[:12] if line.strip())
        return Measure(time.perf_counter() - t0, error=f"{type(err).__name__}: {first}")
    seconds = time.perf_counter() - t0
    report = log.getvalue()
    regs, spills = _REGISTERS.search(report), _SPILLS.search(report)
    if regs is None or spills is None:
        return Measure(seconds, error=f"no ptxas report in the compile output (a cache hit?): {report[-300:]!r}")
    return Measure(
        seconds,
        registers=int(regs.group(1)),
        spill_bytes=int(spills.group(1)) + int(spills.group(2)),
        shared=int(compiled.metadata.shared),
        mma=_mma_kind(compiled.asm),
        approx_div=len(re.findall(r"\bdiv\.(?:full|approx)(?:\.ftz)?\.f32", compiled.asm["ptx"])),
    )


# Worker processes rebuild the (deterministic) entry list and compile the ones they are handed.
_WORKER: dict = {}


def _worker_init(modules: Sequence[str], sweep: str, arch: int, sm_count: int, kernels: Sequence[str],
                 cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # a fresh cache: every kernel really compiles (and ptxas reports)
    _WORKER.update(entries=entries(modules, sweep, sm_count, kernels), arch=arch)


def _worker_compile(index: int) -> Measure:
    return compile_launch(_WORKER["entries"][index].launch, _WORKER["arch"])


def compile_all(modules: Sequence[str], sweep: str, arch: int, sm_count: int, jobs: int,
                kernels: Sequence[str] = ()) -> list[Result]:
    """Compile every distinct launch of ``modules`` at ``sweep``'s problems for ``arch``, on ``jobs`` processes."""
    todo = entries(modules, sweep, sm_count, kernels)
    cache = tempfile.mkdtemp(prefix="adjust-aot-")
    try:
        with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                                 initargs=(modules, sweep, arch, sm_count, kernels, cache)) as pool:
            measures = list(pool.map(_worker_compile, range(len(todo))))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return [Result(arch, e, m) for e, m in zip(todo, measures)]


def failures(results: Sequence[Result], spill_budget: int, other_spill_budget: int | None) -> list[str]:
    """What fails the check: compile errors, spills above the budget, shared memory above the limit."""
    bad = []
    for r in results:
        m, what = r.measure, f"sm_{r.arch} {r.entry.kernel} [{', '.join(r.entry.variants)}] at {describe(r.entry.problems)}"
        if m.error:
            bad.append(f"{what}: compile error: {m.error}")
            continue
        budget = spill_budget if r.entry.production else other_spill_budget
        if budget is not None and m.spill_bytes > budget:
            bad.append(f"{what}: {m.spill_bytes} B of spills per thread > budget {budget} B")
        if m.shared > SHARED_LIMIT[r.arch]:
            bad.append(f"{what}: {m.shared} B of shared memory > sm_{r.arch}'s {SHARED_LIMIT[r.arch]} B")
    return bad


def describe(problems: Sequence[AotProblem]) -> str:
    """Problems in few words: per batch shape, ``model1/model2 dtype1/dtype2`` when they form a full grid."""
    groups: dict[str, list] = {}
    for p in problems:
        groups.setdefault(p.batch_shape, []).append(p)
    out = []
    for shape, ps in groups.items():
        models = list(dict.fromkeys(p.model.name for p in ps))
        dtypes = list(dict.fromkeys(p.dtype_name for p in ps))
        if len(ps) == len(models) * len(dtypes):
            out.append(f"{'/'.join(models)} {'/'.join(dtypes)} {shape}")
        else:
            out.append(", ".join(f"{p.model.name} {p.dtype_name}" for p in ps) + f" {shape}")
    return "; ".join(out)


def table(results: Sequence[Result]) -> str:
    """The results as a markdown table."""
    rows = ["| arch | kernel | variant | problems | regs | spills (B) | shared (B) | mma | approx div | compile s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        m = r.measure
        head = f"| sm_{r.arch} | {r.entry.kernel.strip('_')} | {', '.join(r.entry.variants) or '-'} | {describe(r.entry.problems)} |"
        if m.error:
            rows.append(f"{head} error | | | | | {m.seconds:.1f} |")
        else:
            rows.append(f"{head} {m.registers} | {m.spill_bytes} | {m.shared} | {m.mma} | {m.approx_div} | {m.seconds:.1f} |")
    return "\n".join(rows)


def _nvcc_all(archs: Sequence[int]) -> list:
    """csrc/*.cu compiled for each of ``archs`` (run beside the Triton compiles)."""
    from adjust_kernels.aot_nvcc import compile_cuda_sources

    return [r for arch in archs for r in compile_cuda_sources(arch)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adjust_kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                        help="compute capability to compile for (repeatable; default 90)")
    parser.add_argument("--sweep", default="ci", choices=("ci", "full"), help="problems to compile (aot_shapes)")
    parser.add_argument("--specs", action="append", metavar="MODULE",
                        help="modules whose compile_specs(problem, sm_count) to compile (default: every kernel module)")
    parser.add_argument("--kernel", action="append", default=[], metavar="NAME",
                        help="compile only this kernel (repeatable), e.g. partials_kernel")
    parser.add_argument("--sm-count", type=int, help="SMs the launches are sized for (default: per arch)")
    parser.add_argument("--spill-budget", type=int, default=0, help="spill bytes allowed, bf16/fp16 at real shapes")
    parser.add_argument("--other-spill-budget", type=int, default=None,
                        help="spill bytes allowed for the other variants (default: reported, not checked)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes (default 2)")
    parser.add_argument("--nvcc", action="store_true",
                        help="also compile csrc/*.cu with nvcc (aot_nvcc), on one of the --jobs processes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("TRITON_INTERPRET is set: the kernels would be interpreted functions; unset it to compile")
    archs = args.arch or [90]
    modules = args.specs or list(KERNEL_MODULES)
    t0 = time.perf_counter()
    kernels = [k.strip("_") for k in args.kernel]
    with ThreadPoolExecutor(max_workers=1) as background:
        nvcc = background.submit(_nvcc_all, archs) if args.nvcc else None
        jobs = max(1, args.jobs - 1) if nvcc else args.jobs
        results = []
        for arch in archs:
            results += compile_all(modules, args.sweep, arch, args.sm_count or SM_COUNT[arch], jobs, kernels)
        print(table(results))
        bad = failures(results, args.spill_budget, args.other_spill_budget)
        compile_s = sum(r.measure.seconds for r in results)
        print(f"\n{len(results)} Triton compiles for {', '.join(f'sm_{a}' for a in archs)} in "
              f"{time.perf_counter() - t0:.0f} s wall ({compile_s:.0f} s of compiling, {jobs} processes)")
        if nvcc:
            from adjust_kernels.aot_nvcc import nvcc_table

            nv = nvcc.result()
            print("\n" + nvcc_table(nv))
            bad += [f"nvcc sm_{r.arch} {r.source}: {r.error}" for r in nv if r.error]
            bad += [f"nvcc sm_{r.arch} {k.name}: {k.spill_bytes} B of spills > budget {args.spill_budget} B"
                    for r in nv for k in r.kernels if k.spill_bytes > args.spill_budget]
            print(f"nvcc done after {time.perf_counter() - t0:.0f} s wall")
    for line in bad:
        print(f"FAIL {line}", file=sys.stderr)
    print("AOT check: " + (f"{len(bad)} failure(s)" if bad else "ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
