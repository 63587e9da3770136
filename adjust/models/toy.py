"""`FiniteJointLM`: an exact masked diffusion "model" over a finite set of strings.

Given strings s_1..s_n with weights w_i, its marginal at a masked position is the exact
posterior predictive p(x_j = v | unmasked tokens agree with s_i). Sampling it one
token at a time (K = 1) therefore draws exactly from {s_i ∝ w_i}, while naive
parallel sampling mixes strings: the paper's Fig. 3 ("the cat sat on the mat" vs
"the dog ran in the yard"). Used by tests and metric checks that need a known joint.

`hidden` returns log-probabilities in a d = V space and the LM head is the identity,
so `logits(hidden(x))` are exact log-marginals (log 0 is clamped to -1e4).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from adjust.models.adapter import BaseModelInfo, DiffusionLMAdapter
from adjust.models.layers import LayerConfig

LOG_ZERO = -1e4


class FiniteJointLM(DiffusionLMAdapter):
    """Exact marginals of a weighted finite set of full sequences (prompt included)."""

    def __init__(
        self,
        strings: Sequence[Sequence[int]],
        weights: Sequence[float] | None = None,
        vocab_size: int | None = None,
        mask_token_id: int = 3,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        pad_token_id: int | None = 0,
    ):
        lengths = {len(s) for s in strings}
        if len(lengths) != 1:
            raise ValueError("strings must all have the same length")
        self.strings = torch.tensor([list(s) for s in strings], dtype=torch.long)
        w = torch.ones(len(strings)) if weights is None else torch.tensor(weights, dtype=torch.float32)
        self.weights = w / w.sum()
        V = vocab_size or int(self.strings.max()) + 1
        V += V % 2  # even width: the sampler's RoPE rotates pairs of dimensions
        self.vocab_size = self.hidden_size = V
        self.mask_token_id, self.bos_token_id = mask_token_id, bos_token_id
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.max_seq_len = None
        self.layer_config = LayerConfig(hidden_size=V, num_heads=1, num_kv_heads=1, head_dim=V, intermediate_size=4 * V)
        self.info = BaseModelInfo("finite-joint", V, V, None)
        self._eye = torch.eye(V)
        self._embed = nn.Embedding.from_pretrained(torch.eye(V), freeze=True)
        self.model = self._embed

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        S = self.strings
        if input_ids.shape[1] != S.shape[1]:
            raise ValueError(f"input length {input_ids.shape[1]} != the strings' length {S.shape[1]}")
        known = (input_ids != self.mask_token_id)
        if attention_mask is not None:
            known &= attention_mask.bool()
        # consistent[b, i]: string i agrees with every unmasked token of row b
        agree = (S[None] == input_ids[:, None]) | ~known[:, None]
        post = self.weights[None] * agree.all(-1).float()  # [B, n]
        post = post / post.sum(-1, keepdim=True).clamp(min=1e-30)
        probs = torch.einsum("bn,nlv->blv", post, self._eye[S])
        return probs.clamp(min=1e-30).log().clamp(min=LOG_ZERO)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self._eye

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self._embed
