"""The problems the kernels are compiled for ahead of time (``python -m adjust_kernels.aot``): the real
models' dimensions (Dream-7B, LLaDA-8B, also used by ``benchmarks/shapes.py``), one small shape, and
the batch shapes and dtypes of each sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelDims:
    """The dimensions of a Llama/Qwen2-style model that the sampler pass's kernels see."""

    name: str
    vocab_size: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int


DREAM_7B = ModelDims("dream7b", 152064, 3584, 28, 4, 128, 18944)
LLADA_8B = ModelDims("llada8b", 126464, 4096, 32, 32, 128, 12288)
# Small and with odd sizes, so that the masked edges of every tile are compiled too.
SMALL = ModelDims("small", 4099, 136, 4, 2, 34, 388)
PRODUCTION_MODELS = (DREAM_7B, LLADA_8B)
PRODUCTION_DTYPES = (torch.bfloat16, torch.float16)

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class AotProblem:
    """One base step's ADJUST passes: model, activation dtype, B sequences of L tokens, C candidates
    per sequence and k' kept ids per candidate (candidate-restricted passes)."""

    model: ModelDims
    dtype: torch.dtype
    batch: int = 1
    seq_len: int = 512
    candidates: int = 64
    kept_tokens: int = 64

    @property
    def rows(self) -> int:
        """M = B·L rows through the sampler layer."""
        return self.batch * self.seq_len

    @property
    def candidate_rows(self) -> int:
        """N = B·C rows through the LM head."""
        return self.batch * self.candidates

    @property
    def production(self) -> bool:
        """A real model's shape in a dtype it runs in (the AOT check allows these no spills)."""
        return self.model in PRODUCTION_MODELS and self.dtype in PRODUCTION_DTYPES

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES[self.dtype]

    @property
    def batch_shape(self) -> str:
        return f"B{self.batch} L{self.seq_len} C{self.candidates} k'{self.kept_tokens}"

    @property
    def name(self) -> str:
        return f"{self.model.name} {self.dtype_name} {self.batch_shape}"


def aot_problems(sweep: str) -> list[AotProblem]:
    """The problems of a sweep. ``ci``: Dream-7B and LLaDA-8B at B = 1, L = 512, C = 64 in bf16 and fp16
    (every production variant of every kernel) plus the small shape in fp32. ``full`` adds B = 16
    (N = 1024 candidate rows), one candidate row, fp32 at the real shapes and the small shape in bf16/fp16."""
    ci = [AotProblem(m, dt) for m in PRODUCTION_MODELS for dt in PRODUCTION_DTYPES]
    ci.append(AotProblem(SMALL, torch.float32, batch=3, seq_len=67, candidates=23, kept_tokens=19))
    if sweep == "ci":
        return ci
    if sweep != "full":
        raise ValueError(f"aot_problems: sweep must be 'ci' or 'full', got {sweep!r}")
    more = [AotProblem(m, dt, batch=16, seq_len=256) for m in PRODUCTION_MODELS for dt in PRODUCTION_DTYPES]
    more += [AotProblem(m, dt, seq_len=128, candidates=1) for m in PRODUCTION_MODELS for dt in PRODUCTION_DTYPES]
    more += [AotProblem(m, torch.float32) for m in PRODUCTION_MODELS]
    more += [AotProblem(SMALL, dt, batch=3, seq_len=67, candidates=23, kept_tokens=19) for dt in PRODUCTION_DTYPES]
    return ci + more
