"""The ahead-of-time GPU compile check (``python -m adjust_kernels.aot``) and the launch configurations
it compiles: pure functions of the problem, the ones the op wrappers launch with, covering every kernel.

The real compile of every kernel runs in CI (``make aot-check``); here: that the check catches what the
interpreter cannot (a kernel that runs under TRITON_INTERPRET=1 and fails ``triton.compile``), and the
pieces of the check itself.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adjust_kernels import aot, aot_nvcc, launch
from adjust_kernels.aot_shapes import DREAM_7B, LLADA_8B, PRODUCTION_DTYPES, SMALL, AotProblem, aot_problems
from adjust_kernels.lm_head_sample import SCORES, lm_head_sample, lm_head_sample_config
from adjust_kernels.rmsnorm import rmsnorm, rmsnorm_config
from adjust_kernels.rope import rope, rope_config
from adjust_kernels.sampler_input import sampler_input, sampler_input_config
from adjust_kernels.swiglu import swiglu, swiglu_config
from kernel_common import DEVICE, KERNEL_TEST

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _compile_env() -> dict[str, str]:
    """The environment of a real compile: no interpreter, the tests folder importable."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.parametrize("n", [1000, 37])
@pytest.mark.usefixtures(*KERNEL_TEST[1].args)
@KERNEL_TEST[0]
def test_broken_kernel_runs_in_the_interpreter(n: int) -> None:
    """The interpreter (numpy) runs the loop-carried scalar turned block, and gets the right answer."""
    from aot_broken_kernel import running_max

    x = torch.randn(n, device=DEVICE) - 5
    assert running_max(x, broken=True).item() == running_max(x, broken=False).item() == x.max().item()


def test_aot_check_fails_on_a_kernel_the_interpreter_runs() -> None:
    """The same kernel through ``python -m adjust_kernels.aot``: the broken variant is a compile error
    (exit 1, named), the fixed one compiles (its registers in the table)."""
    run = subprocess.run([sys.executable, "-m", "adjust_kernels.aot", "--arch", "90", "--specs", "aot_broken_kernel"],
                         env=_compile_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"FAIL sm_90 _running_max_kernel \[broken\].*compile error.*Loop-carried variable best", run.stderr)
    assert re.search(r"\| sm_90 \| running_max_kernel \| fixed \| .* \| \d+ \| 0 \| \d+ \|", run.stdout), run.stdout
    assert "AOT check: 1 failure(s)" in run.stdout


def test_aot_refuses_to_run_interpreted() -> None:
    env = {**_compile_env(), "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-m", "adjust_kernels.aot", "--specs", "aot_broken_kernel"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "TRITON_INTERPRET is set" in run.stderr


# -- the launch configurations ------------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[launch.Launch]:
    """Every Launch the op wrappers make, still run."""
    seen: list[launch.Launch] = []
    real = launch.Launch.__call__

    def record(self: launch.Launch) -> None:
        seen.append(self)
        real(self)

    monkeypatch.setattr(launch.Launch, "__call__", record)
    return seen


@KERNEL_TEST[0]
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wrappers_launch_with_their_config_functions(recorded: list[launch.Launch], dtype: torch.dtype) -> None:
    interp = DEVICE == "cpu"
    kw = {"dtype": dtype, "device": DEVICE}
    M, d, I, V = 7, 40, 72, 53
    x = torch.randn(M, d, **kw)
    rmsnorm(x, torch.ones(d, **kw), 1e-6, residual=x)
    assert recorded[-1].config == rmsnorm_config(M, d, residual=True)
    swiglu(torch.randn(M, I, **kw), torch.randn(M, I, **kw))
    assert recorded[-1].config == swiglu_config(M, I)
    q, k, cs = torch.randn(2, 3, 5, 8, **kw), torch.randn(2, 1, 5, 8, **kw), torch.randn(2, 5, 8, **kw)
    rope(q, k, cs, cs)
    assert [r.config for r in recorded[-2:]] == [rope_config(2, 3, 5, 8), rope_config(2, 1, 5, 8)]
    sampler_input(torch.randint(0, V, (M,), device=DEVICE), x, torch.randn(V, d, **kw), torch.ones(d, **kw),
                  torch.ones(d, **kw), torch.randn(d, 2 * d, **kw), 1e-6)
    assert recorded[-1].config == sampler_input_config(M, d, dtype, interpreting=interp)
    so = torch.tensor([1, 2], device=DEVICE)
    lm_head_sample(x, torch.randn(V, d, **kw), None, so, temperature=1.0, alg="margin", num_splits=3)
    sm = torch.cuda.get_device_properties(DEVICE).multi_processor_count if DEVICE == "cuda" else 1
    plan = lm_head_sample_config(M, V, d, dtype, alg="margin", temperature=1.0, kept=False, store=False, has_bias=False,
                                 sm_count=sm, interpreting=interp, num_splits=3)
    assert [r.config for r in recorded[-2:]] == [plan.partials, plan.finalize]


_PLAN_CASES = [(n, v, d, dt, kept, t, sm, interp)
               for n, v, d in ((1, 131, 20), (64, DREAM_7B.vocab_size, 3584), (1024, LLADA_8B.vocab_size, 4096),
                               (69, 64, 136))
               for dt in (torch.float32, torch.bfloat16) for kept in (False, True) for t in (0.0, 1.0)
               for sm, interp in ((132, False), (108, False), (1, True))]


@pytest.mark.parametrize("n,v,d,dtype,kept,temperature,sm_count,interpreting", _PLAN_CASES)
def test_lm_head_plan_covers_the_problem(n, v, d, dtype, kept, temperature, sm_count, interpreting) -> None:
    plan = lm_head_sample_config(n, v, d, dtype, alg="entropy", temperature=temperature, kept=kept, store=False,
                                 has_bias=False, sm_count=sm_count, interpreting=interpreting)
    again = lm_head_sample_config(n, v, d, dtype, alg="entropy", temperature=temperature, kept=kept, store=False,
                                  has_bias=False, sm_count=sm_count, interpreting=interpreting)
    assert plan == again  # a pure function of the problem
    c = plan.partials.constexprs
    row_blocks, n_splits = plan.partials.grid
    assert (row_blocks - 1) * c["BLOCK_N"] < n <= row_blocks * c["BLOCK_N"]
    assert n_splits == plan.n_splits and (n_splits - 1) * plan.v_per_split < v <= n_splits * plan.v_per_split
    assert plan.v_per_split % c["BLOCK_V"] == 0
    if not kept:  # tl.dot needs 16 in each dimension
        assert min(c["BLOCK_N"], c["BLOCK_V"], c["BLOCK_D"]) >= 16
    f = plan.finalize.constexprs
    assert (plan.finalize.grid[0] - 1) * f["BLOCK_N"] < n <= plan.finalize.grid[0] * f["BLOCK_N"]
    assert f["BLOCK_S"] <= (2 if interpreting else 32)  # chunked merge: registers bounded at any V
    assert c["SAMPLE"] == f["SAMPLE"] == (temperature > 0) and c["UPCAST"] == (interpreting and dtype == torch.bfloat16)


def test_lm_head_splits_follow_the_sm_count() -> None:
    """The SM count is an argument (no device query inside): more SMs, more vocabulary splits."""
    def splits(sm: int) -> int:
        return lm_head_sample_config(64, DREAM_7B.vocab_size, 3584, torch.bfloat16, alg="entropy", temperature=0.0,
                                     kept=False, store=False, has_bias=False, sm_count=sm, interpreting=False).n_splits
    assert splits(16) < splits(132)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sampler_input_config_fits_sm80_shared_memory_plan(dtype: torch.dtype) -> None:
    """fp32 takes the smaller tiles (the 16-bit ones asked fp32 for 214 KB of shared memory on sm_80)."""
    c = sampler_input_config(512, 3584, dtype, interpreting=False).constexprs
    if dtype == torch.float32:
        assert (c["BLOCK_N"], c["BLOCK_K"]) == (64, 16)
    else:
        assert (c["BLOCK_N"], c["BLOCK_K"]) == (128, 64)


def test_every_kernel_has_compile_specs_at_every_ci_problem() -> None:
    """Each ``*_kernel`` of every adjust_kernels module is in the AOT modules' specs, at every problem of the
    CI sweep, and every bf16/fp16 variant at the Dream-7B and LLaDA-8B shapes is marked production."""
    defined = set()
    for path in sorted((ROOT / "adjust_kernels").glob("*.py")):
        mod = importlib.import_module(f"adjust_kernels.{path.stem}")
        names = {name for name, obj in vars(mod).items() if name.endswith("_kernel") and hasattr(obj, "fn")
                 and obj.fn.__module__ == mod.__name__}
        if names:
            assert mod.__name__ in aot.KERNEL_MODULES, f"{mod.__name__} defines {names} but is not compiled ahead of time"
        defined |= names
    problems = aot_problems("ci")
    assert {(p.model, p.dtype) for p in problems if p.production} == {
        (m, dt) for m in (DREAM_7B, LLADA_8B) for dt in PRODUCTION_DTYPES}
    for p in problems:
        covered = set()
        for name in aot.KERNEL_MODULES:
            covered |= {s.kernel_name for s in importlib.import_module(name).compile_specs(p, 132)}
        assert covered == defined, p.name
    lm = importlib.import_module("adjust_kernels.lm_head_sample").compile_specs(problems[0], 132)
    assert {s.variant for s in lm if s.kernel_name == "_finalize_kernel"} == {
        f"{mode} {t} {alg}" for mode in ("full", "logits_out", "kept") for t in ("T=0", "T>0") for alg in SCORES}


# -- the check's own pieces ---------------------------------------------------------------------------


def _result(arch: int, problem: AotProblem, **measure) -> aot.Result:
    entry = aot.Entry("_k", None, [problem], ["v"])
    return aot.Result(arch, entry, aot.Measure(1.0, **measure))


def test_failures_apply_budgets_and_limits() -> None:
    prod, small = AotProblem(DREAM_7B, torch.bfloat16), AotProblem(SMALL, torch.float32)
    assert prod.production and not small.production
    results = [
        _result(90, prod, registers=100, spill_bytes=0, shared=232448),  # at the limit: fine
        _result(90, prod, registers=255, spill_bytes=8),  # production spill
        _result(90, small, registers=255, spill_bytes=800),  # other spill: not checked by default
        _result(80, prod, registers=100, shared=166913),  # one byte over sm_80
        _result(90, small, error="CompilationError: boom"),
    ]
    bad = aot.failures(results, spill_budget=0, other_spill_budget=None)
    assert len(bad) == 3
    assert "8 B of spills" in bad[0] and "166913 B of shared memory > sm_80's 166912 B" in bad[1] and "boom" in bad[2]
    assert len(aot.failures(results, spill_budget=8, other_spill_budget=100)) == 3  # 8 B now allowed, 800 B not


def test_describe_merges_a_full_grid_of_problems() -> None:
    ps = [AotProblem(m, dt) for m in (DREAM_7B, LLADA_8B) for dt in PRODUCTION_DTYPES]
    assert aot.describe(ps) == "dream7b/llada8b bf16/fp16 B1 L512 C64 k'64"
    assert aot.describe(ps[:3]) == "dream7b bf16, dream7b fp16, llada8b bf16 B1 L512 C64 k'64"


def test_setup_py_and_the_nvcc_step_use_the_same_flags() -> None:
    flags = re.search(r'compile_args\["nvcc"\] = \[(.*?)\]', (ROOT / "setup.py").read_text()).group(1)
    assert tuple(re.findall(r'"([^"]+)"', flags)) == aot_nvcc.SETUP_NVCC_FLAGS


def test_macros_header_is_supplied_only_when_torch_lacks_it(tmp_path: Path) -> None:
    lacking, having = tmp_path / "cpu-torch", tmp_path / "cuda-torch"
    (having / "c10" / "cuda" / "impl").mkdir(parents=True)
    (having / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#define C10_CUDA_BUILD_SHARED_LIBS\n")
    lacking.mkdir()
    assert aot_nvcc.macros_include([str(having)], tmp_path / "shim") == []
    flags = aot_nvcc.macros_include([str(lacking)], tmp_path / "shim")
    assert flags == ["-I", str(tmp_path / "shim")]
    assert "#define C10_CUDA_BUILD_SHARED_LIBS" in (tmp_path / "shim/c10/cuda/impl/cuda_cmake_macros.h").read_text()


def test_parse_ptxas_report() -> None:
    report = """ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'
ptxas info    : Function properties for _Z3fooPf
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 56 registers, used 1 barriers, 448 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function '_Z3barv' for 'sm_90'
ptxas info    : Function properties for _Z3barv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers, 352 bytes cmem[0]
"""
    got = aot_nvcc.parse_ptxas(report)
    assert [(k.registers, k.spill_bytes, k.shared) for k in got] == [(56, 20, 448), (8, 0, 0)]
    assert got[0].name in ("foo", "_Z3fooPf")  # demangled where c++filt exists
