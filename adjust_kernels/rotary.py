"""Rotary position embeddings (RoPE) in pure PyTorch, half-rotation layout (Llama/Qwen2).

The positions of the tokens (left padding skipped), their cos/sin tables and the rotation itself:
the specification that the ``rope`` kernel (``adjust_kernels/rope.py``) matches and its reference
twin calls, and what ``adjust.models.layers`` builds its attention from (one definition for both).
"""

from __future__ import annotations

import torch

__all__ = ["apply_rope", "position_ids_from_mask", "rope_cos_sin"]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (Dream's `tok_idx`): 0 at the first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, L, head_dim] for integer positions [B, L] (half-rotation layout)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim)
    )
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, D] by cos/sin [B, L, D]."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]
