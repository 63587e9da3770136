"""Transformer building blocks shared by the base model and the ADJUST sampler.

Llama/Qwen2 style: RMSNorm, rotary position embeddings (RoPE), grouped-query
attention with optional qkv bias, SwiGLU MLP. Attention is **bidirectional**
(masked diffusion LMs see the whole sequence); padding keys are masked out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adjust.fields import check_positive, check_types
from adjust.models.kv_cache import BlockKVCache

# Defined in the kernel package (the rope kernel's reference shares them); re-exported for the models.
from adjust_kernels.rotary import apply_rope, position_ids_from_mask, rope_cos_sin  # noqa: F401


@dataclass
class LayerConfig:
    """What one decoder layer needs; the sampler copies it from its base model."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        check_positive(self, "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                       "rms_norm_eps", "rope_theta")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs of dimensions), got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 as Llama/Qwen2 do, then cast back.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.cfg = cfg
        d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        if h % kv:
            raise ValueError(f"num_heads ({h}) must be a multiple of num_kv_heads ({kv})")
        self.q_proj = nn.Linear(d, h * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, kv * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, kv * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(h * hd, d, bias=False)

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, H, L, D] and k [B, H_kv, L, D] (both rotated), v [B, H_kv, L, D] of the rows x [B, L, d]."""
        B, L, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(B, L, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, c.num_kv_heads, c.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Bidirectional attention of the queries q [B, H, Lq, D] over k, v [B, H_kv, L, D]; [B, Lq, d]."""
        c = self.cfg
        rep = c.num_heads // c.num_kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
            # torch's CPU flash attention: its bf16 backward is ~7x slower than fp32's at these head sizes
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                                     is_causal=False).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        B, _, Lq, _ = q.shape
        return self.o_proj(out.transpose(1, 2).reshape(B, Lq, c.num_heads * c.head_dim))

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        kv_cache: BlockKVCache | None = None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        """Attention of the rows x over themselves, or, with ``kv_cache`` (a `BlockKVCache`), over the
        cached sequence with these rows' keys/values written in (``key_mask`` then covers all its keys)."""
        q, k, v = self.project(x, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v, layer_idx)
        return self.attend(q, k, v, key_mask)


class SwiGLU(nn.Module):
    def __init__(self, d: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, inter, bias=False)
        self.up_proj = nn.Linear(d, inter, bias=False)
        self.down_proj = nn.Linear(inter, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm transformer block: x + Attn(Norm(x)), then + MLP(Norm(.))."""

    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor | None,
        kv_cache: BlockKVCache | None = None, layer_idx: int = 0,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, key_mask, kv_cache, layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_at(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor | None,
                   idx: torch.Tensor, kv_cache: BlockKVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        """The layer's output [B, C, d] at the positions ``idx`` [B, C] of x [B, L, d] only: every row is
        still a key and value, but only those C rows' queries, attention output and MLP are computed.
        ``kv_cache`` (recording) keeps every row's keys/values as layer ``layer_idx``."""
        q, k, v = self.self_attn.project(self.input_layernorm(x), cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v, layer_idx)
        q = q.gather(2, idx[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
        x = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        x = x + self.self_attn.attend(q, k, v, key_mask)
        return x + self.mlp(self.post_attention_layernorm(x))
