"""Build the compiled ops in ``csrc/`` as the extension module ``adjust_kernels._C``.

Metadata lives in pyproject.toml; this file only adds the extension. Build with
``pip install --no-build-isolation -e .`` (torch must already be installed).

Environment flags (``1`` turns them on):

- ``ADJUST_SKIP_CPP_BUILD``: build no extension at all; the package then runs on its pure-PyTorch
  references and ``adjust_kernels.select_sample`` raises an error saying how to build.
- ``ADJUST_SKIP_CUDA_BUILD``: build the CPU kernels only.
- ``ADJUST_FORCE_CUDA_BUILD``: require the CUDA kernels: fail instead of silently building the CPU
  kernels alone when torch has no CUDA or nvcc (``CUDA_HOME``) is not found.

Without flags the CPU kernels always build (with OpenMP when the compiler accepts ``-fopenmp``)
and the CUDA kernels build when torch was built with CUDA and nvcc is found; no GPU needs to be
visible, so wheels can be built on CPU-only machines that have the CUDA toolkit
(``TORCH_CUDA_ARCH_LIST`` picks the architectures).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from setuptools import setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _cxx_supports_openmp() -> bool:
    """Whether the C++ compiler compiles and links an OpenMP program (Apple clang does not)."""
    src = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "omp_check.cpp")
        path.write_text(src)
        cmd = [os.environ.get("CXX", "c++"), "-fopenmp", str(path), "-o", str(Path(tmp, "omp_check"))]
        try:
            return subprocess.run(cmd, check=False, capture_output=True).returncode == 0
        except OSError:
            return False


def _extensions() -> tuple[list, dict]:
    if _flag("ADJUST_SKIP_CPP_BUILD"):
        return [], {}

    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if _flag("ADJUST_FORCE_CUDA_BUILD") and not with_cuda:
        raise RuntimeError(
            "ADJUST_FORCE_CUDA_BUILD=1 but the CUDA kernels cannot be built: "
            f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r} "
            "(install a CUDA build of torch and the CUDA toolkit, or set CUDA_HOME)"
        )
    with_cuda = with_cuda and not _flag("ADJUST_SKIP_CUDA_BUILD")

    openmp = ["-fopenmp"] if _cxx_supports_openmp() else []
    sources = ["csrc/bindings.cpp", "csrc/select_sample.cpp"]
    # No fast-math anywhere: the kernels rely on IEEE inf handling and accurate expf/logf.
    compile_args: dict[str, list[str]] = {"cxx": ["-O3", *openmp]}
    if with_cuda:
        sources.append("csrc/select_sample_cuda.cu")
        compile_args["nvcc"] = ["-O3", "-lineinfo"]
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    ext = ext_cls(
        name="adjust_kernels._C",
        sources=sources,
        extra_compile_args=compile_args,
        extra_link_args=openmp,
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
