"""The kept vocabulary of candidate-restricted ADJUST passes, in pure PyTorch: which token ids each
row keeps (``keep_top_ids``) and the LM head's logits at those ids only (``kept_linear``).

One definition shared by the torch engine (``adjust.candidates``) and the kernels: ``AdjustLoop``
keeps its ids with ``keep_top_ids``, and ``lm_head_sample_reference`` computes the restricted logits
with ``kept_linear``, the computation the ``KEPT`` variant of the ``lm_head_sample`` kernel matches.
"""

from __future__ import annotations

import torch

__all__ = ["keep_top_ids", "kept_linear"]


def keep_top_ids(logits: torch.Tensor, k: int, mask_token_id: int | None) -> torch.Tensor:
    """Ids [N, min(k, V)] of each row's k largest logits (mask id last in line), ascending."""
    z = logits if mask_token_id is None else logits.index_fill(-1, torch.tensor([mask_token_id], device=logits.device),
                                                               float("-inf"))
    ids = torch.topk(z, min(k, z.shape[-1]), dim=-1).indices
    return ids.sort(dim=-1).values


def kept_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
    """Logits [N, k] at the kept ids only, in W's dtype: row n is ``h_n · W[ids_n]ᵀ (+ b[ids_n])``."""
    w = weight[ids]  # [N, k, d]: only the kept rows of W are read
    z = torch.bmm(w, h.to(w.dtype)[:, :, None]).squeeze(-1)
    return z if bias is None else z + bias[ids]
