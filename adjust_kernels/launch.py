"""How the Triton ops launch their kernels, as data: one :class:`LaunchConfig` per kernel call, a pure
function of the problem (shapes, dtypes, SM count, interpreting or not), and :class:`Launch` = a config
plus the kernel and its arguments.

Each op's wrapper builds its launches with the same function that builds its ahead-of-time compile
specs (:class:`CompileSpec`, the op module's ``compile_specs``), so ``python -m adjust_kernels.aot``
compiles for sm_90 / sm_80 exactly what the wrapper would launch, argument specialisation included
(specs pass ``meta`` tensors: a dtype and strides, no memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from adjust_kernels.aot_shapes import AotProblem


@dataclass(frozen=True)
class LaunchConfig:
    """Grid, constexpr arguments and compile options of one kernel call.

    ``fp_fusion`` is passed as Triton's ``enable_fp_fusion`` (fused multiply-add contraction), always
    explicitly: Triton 3.9 defaults to on and 3.10 to off, and rounding parity depends on it.
    """

    grid: tuple[int, ...]
    constexprs: Mapping[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    fp_fusion: bool = True

    @property
    def options(self) -> dict[str, Any]:
        """The compile options, as ``triton.compile`` and a kernel launch take them."""
        return {"num_warps": self.num_warps, "num_stages": self.num_stages, "enable_fp_fusion": self.fp_fusion}


@dataclass(frozen=True)
class Launch:
    """One kernel call: ``kernel[config.grid](*args, **config.constexprs, **config.options)``."""

    kernel: Any  # a @triton.jit function (an interpreted one under TRITON_INTERPRET=1)
    config: LaunchConfig
    args: tuple[Any, ...]  # the runtime (non-constexpr) arguments, in the kernel's order

    def __call__(self) -> None:
        self.kernel[self.config.grid](*self.args, **self.config.constexprs, **self.config.options)


@dataclass(frozen=True)
class CompileSpec:
    """A launch to compile ahead of time (``python -m adjust_kernels.aot``), with the ``problem`` and
    the ``variant`` of the op it is, for the table; the AOT check allows a production problem's (bf16 or
    fp16 at a real model's shape) no spills."""

    problem: AotProblem
    variant: str
    launch: Launch

    @property
    def kernel_name(self) -> str:
        return self.launch.kernel.fn.__name__


def meta_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor with no storage: what a compile spec passes for a kernel's pointer argument
    (Triton specialises on its dtype and on 16-byte alignment, which a real allocation also has)."""
    return torch.empty(shape, dtype=dtype, device="meta")
