"""Model shapes the benchmarks run, and builders for their (random or shipped) weights.

CPU shapes are small enough for a loaded 2-core machine; the Dream-7B and LLaDA-8B shapes are
GPU-only (random bf16 weights, ~15–16 GB each) and skip cleanly without CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from adjust import AdjustSampler, MaskedDiffusionLM, MDLMConfig
from adjust.models.adapter import BaseModelInfo, DiffusionLMAdapter
from adjust.models.layers import LayerConfig
from adjust_kernels.aot_shapes import DREAM_7B, LLADA_8B, ModelDims

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
# fp32 on CPU (bf16 CPU matmuls are neither fast nor representative); bf16 on GPU, as Dream/LLaDA ship.
DTYPE = torch.bfloat16 if HAS_CUDA else torch.float32


@dataclass(frozen=True)
class ModelShape:
    """A Llama/Qwen2-style masked diffusion LM shape (base model, its one-layer sampler, LM head)."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    qkv_bias: bool = False
    gpu_only: bool = False
    pretrained: str | None = None  # a shipped model + sampler name instead of random weights
    prompt_len: int = 16  # 0: unconditional from BOS
    gen_lengths: tuple[int, ...] = ()  # end-to-end generation lengths ((): kernel-only shape)
    mask_token_id: int = 3
    block_length: int | None = None  # semi-AR blocks: the base-cache benchmark's shape (not the e2e grid's)

    # -- parameter counts (used by the floors) -------------------------------------------------------

    @property
    def layer_linear_params(self) -> int:
        """Weights of one decoder layer's GEMMs (q, k, v, o, gate, up, down)."""
        d, h, kv, hd, i = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        return d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * i

    @property
    def layer_params(self) -> int:
        """All parameters of one decoder layer (GEMMs, qkv bias, two RMSNorm weights)."""
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.qkv_bias else 0
        return self.layer_linear_params + bias + 2 * self.hidden_size

    @property
    def sampler_linear_params(self) -> int:
        """GEMM weights of the sampler g: DownProj (2d → d) + one decoder layer."""
        return 2 * self.hidden_size**2 + self.layer_linear_params

    @property
    def sampler_params(self) -> int:
        """All sampler parameters: DownProj, the layer, Norm_e, Norm_h, Norm_out."""
        return 2 * self.hidden_size**2 + self.layer_params + 3 * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def base_params(self) -> int:
        """Embedding + layers + final norm + LM head (untied)."""
        return 2 * self.lm_head_params + self.num_layers * self.layer_params + self.hidden_size

    @property
    def layer_config(self) -> LayerConfig:
        return LayerConfig(self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim,
                           self.intermediate_size, qkv_bias=self.qkv_bias)

    def mdlm_config(self, max_seq_len: int) -> MDLMConfig:
        return MDLMConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                          num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                          intermediate_size=self.intermediate_size, qkv_bias=self.qkv_bias,
                          max_seq_len=max_seq_len, mask_token_id=self.mask_token_id, name=f"bench-{self.name}")


def _real(dims: ModelDims, num_layers: int, **kw) -> ModelShape:
    """A real model's shape from its dimensions (shared with the ahead-of-time compile check)."""
    return ModelShape(dims.name, dims.vocab_size, dims.hidden_size, num_layers, dims.num_heads, dims.num_kv_heads,
                      dims.head_dim, dims.intermediate_size, **kw)


SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    # The shipped model and its trained sampler (adjust/assets): vocab 36, 4 layers × d128.
    ModelShape("synthetic", 36, 128, 4, 4, 2, 32, 384, pretrained="synthetic", prompt_len=0, gen_lengths=(16, 32)),
    # Random, a little larger, with Dream's cost proportions: LM head ≈ 2.7 layers, base = 8 sampler layers.
    ModelShape("mini-8L", 4096, 128, 8, 4, 2, 32, 384, prompt_len=8, gen_lengths=(16, 24)),
    # The base-cache benchmark (test_base_cache.py): a long prompt, 128 tokens in blocks of 32, random.
    ModelShape("long-8L", 4096, 128, 8, 4, 2, 32, 384, prompt_len=384, gen_lengths=(128,), block_length=32),
    # Kernel-only CPU shape: an LM head (64 MB fp32) that no cache holds.
    ModelShape("kern-512", 32768, 512, 1, 8, 2, 64, 1536),
    # GPU-only, random bf16 weights.
    _real(DREAM_7B, 28, qkv_bias=True, gpu_only=True, gen_lengths=(128, 256), mask_token_id=151666),
    _real(LLADA_8B, 32, gpu_only=True, gen_lengths=(128, 256), mask_token_id=126336),
)}


def selected(shape: ModelShape) -> str | None:
    """Why ``shape`` is skipped on this machine, or None when it runs (``ADJUST_BENCH_SHAPES=a,b`` picks)."""
    only = os.environ.get("ADJUST_BENCH_SHAPES")
    if only and shape.name not in only.split(","):
        return f"shape {shape.name} not in ADJUST_BENCH_SHAPES={only}"
    if shape.gpu_only and not HAS_CUDA:
        return f"{shape.name}: GPU-only shape (random bf16 weights, ~16 GB); no CUDA device here"
    return None


@contextmanager
def _default_device_dtype(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly on ``device`` in ``dtype`` (no fp32 copy of a 7B model)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _realistic_sampler(sampler: AdjustSampler) -> AdjustSampler:
    """A trained-looking sampler: Norm_out = 1 (the fresh zero makes g the identity in value, not in cost)."""
    with torch.no_grad():
        sampler.norm_out.weight.fill_(1.0)
    return sampler.eval()


def build_model(shape: ModelShape, device: torch.device = DEVICE,
                dtype: torch.dtype = DTYPE) -> tuple[MaskedDiffusionLM, AdjustSampler]:
    """The base model and an ADJUST sampler of ``shape`` on ``device`` (shipped weights or random, seed 0)."""
    if shape.pretrained:
        model = MaskedDiffusionLM.from_pretrained(shape.pretrained, device=device, dtype=dtype)
        sampler = AdjustSampler.from_pretrained(shape.pretrained, device=device, dtype=dtype)
        c = model.config
        got = (c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size)
        want = (shape.vocab_size, shape.hidden_size, shape.num_layers, shape.num_heads, shape.num_kv_heads,
                shape.head_dim, shape.intermediate_size)
        if got != want:
            raise RuntimeError(f"shipped model {shape.pretrained!r} is {got}, the benchmark shape says {want}")
        return model, sampler
    torch.manual_seed(0)
    max_len = shape.prompt_len + max(shape.gen_lengths, default=0) + 1
    with _default_device_dtype(device, dtype):
        model = MaskedDiffusionLM(shape.mdlm_config(max_seq_len=max(max_len, 64))).eval()
        sampler = AdjustSampler.from_base(model)
    return model, _realistic_sampler(sampler)


class HeadAdapter(DiffusionLMAdapter):
    """Just what one ADJUST pass touches: the embedding E, the LM head W, the sampler's layer config
    (no base layers, so kernel runs of 7B shapes need ~3 GB, not ~16)."""

    def __init__(self, shape: ModelShape, embed: nn.Embedding, lm_head: torch.Tensor):
        self.model = embed
        self.mask_token_id = shape.mask_token_id
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 1, 2, 0
        self.vocab_size, self.hidden_size = shape.vocab_size, shape.hidden_size
        self.max_seq_len = None
        self.layer_config = shape.layer_config
        self.info = BaseModelInfo(f"bench-{shape.name}", shape.vocab_size, shape.hidden_size, None)
        self._embed, self._lm_head = embed, lm_head

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self._lm_head

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self._embed


def build_pass_parts(shape: ModelShape, device: torch.device = DEVICE,
                     dtype: torch.dtype = DTYPE) -> tuple[HeadAdapter, AdjustSampler]:
    """Random E, W and a sampler of ``shape`` (seed 0), for the per-kernel runs."""
    torch.manual_seed(0)
    with _default_device_dtype(device, dtype):
        embed = nn.Embedding(shape.vocab_size, shape.hidden_size)
        lm_head = torch.randn(shape.vocab_size, shape.hidden_size) * 0.02
        adapter = HeadAdapter(shape, embed.requires_grad_(False), lm_head)
        sampler = AdjustSampler(shape.layer_config, adapter.info)
    return adapter, _realistic_sampler(sampler)
