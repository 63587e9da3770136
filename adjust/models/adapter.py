"""The base-model adapter protocol: the one view of a masked diffusion LM the engine uses.

Every base model (the package's `MaskedDiffusionLM`, Hugging Face Dream, LLaDA, ...)
is wrapped so the generation engine and the ADJUST sampler see the same things:

- ids: `mask_token_id`, `bos_token_id`, `eos_token_id`, `pad_token_id`, `vocab_size`;
- `hidden(x, attention_mask)` -> final post-norm hidden states [B, L, d], aligned so
  that `logits(hidden)[:, i]` predicts token i (Dream shifts by one; we undo it here);
- `lm_head_weight` [V, d] (+ `lm_head_bias`), `embed_tokens` (frozen, shared with the sampler);
- `layer_config`: what the sampler's decoder layer copies; `last_layer` to initialise it;
- for the base-model block cache (`adjust.base_cache`), where `supports_base_cache`:
  `hidden_and_cache(x, attention_mask)` (a full forward that also returns every layer's keys/values
  in a `BlockKVCache`) and `hidden_window(x, attention_mask, cache, start, end)` (the hidden states
  of the rows [start, end) from a forward over those rows only, the other positions' keys/values
  read from the cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adjust.models.kv_cache import BlockKVCache
from adjust.models.layers import LayerConfig
from adjust.models.mdlm import MaskedDiffusionLM


@dataclass(frozen=True)
class BaseModelInfo:
    """Identity of a base model, stored in sampler checkpoints and trajectory manifests to refuse mismatches.

    `fingerprint` identifies the weights (see `adjust.identity`); None where unknown
    (weights never saved, files older than fingerprints, custom adapters).
    """

    name: str
    vocab_size: int
    hidden_size: int
    tokenizer_fingerprint: str | None
    fingerprint: str | None = None


class DiffusionLMAdapter:
    """Protocol (and base class) of a wrapped masked diffusion LM."""

    model: nn.Module
    mask_token_id: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    vocab_size: int
    hidden_size: int
    max_seq_len: int | None
    layer_config: LayerConfig
    info: BaseModelInfo

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def supports_base_cache(self) -> bool:
        """Whether `hidden_and_cache` / `hidden_window` exist (``generate(base_cache=...)``)."""
        return False

    def hidden_and_cache(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BlockKVCache]:
        """`hidden(input_ids, attention_mask)` and a `BlockKVCache` of every layer's keys/values."""
        raise NotImplementedError(f"{type(self).__name__} has no base-model KV cache (use base_cache=None)")

    def hidden_window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: BlockKVCache, start: int, end: int
    ) -> torch.Tensor:
        """[B, end − start, d]: `hidden(input_ids, attention_mask)[:, start:end]` from a forward over those
        rows only (an adapter may recompute a few more, e.g. Dream the row before, for its shift); every
        other position's keys/values are read from ``cache`` (as they were at its full forward), and
        the recomputed rows' keys/values are written into it. ``input_ids`` [B, L] is the whole sequence."""
        raise NotImplementedError(f"{type(self).__name__} has no base-model KV cache (use base_cache=None)")

    @property
    def lm_head_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def lm_head_bias(self) -> torch.Tensor | None:
        return None

    @property
    def embed_tokens(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def last_layer(self) -> nn.Module | None:
        """The base's last decoder layer, when it has the sampler's layout (for initialisation)."""
        return None

    @property
    def device(self) -> torch.device:
        return self.lm_head_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head_weight.dtype

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the LM head: [..., d] -> [..., V]."""
        return nn.functional.linear(hidden, self.lm_head_weight, self.lm_head_bias)


class MDLMAdapter(DiffusionLMAdapter):
    """Adapter of the package's own `MaskedDiffusionLM` (no shift, no bias)."""

    def __init__(self, model: MaskedDiffusionLM):
        c = model.config
        self.model = model
        self.mask_token_id = c.mask_token_id
        self.bos_token_id = c.bos_token_id
        self.eos_token_id = c.eos_token_id
        self.pad_token_id = c.pad_token_id
        self.vocab_size = c.vocab_size
        self.hidden_size = c.hidden_size
        self.max_seq_len = c.max_seq_len
        self.layer_config = c.layer_config
        self.info = BaseModelInfo(c.name, c.vocab_size, c.hidden_size, c.tokenizer_fingerprint, model.fingerprint)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.hidden(input_ids, attention_mask)

    @property
    def supports_base_cache(self) -> bool:
        return True

    def hidden_and_cache(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BlockKVCache]:
        cache = BlockKVCache()
        return self.model.hidden(input_ids, attention_mask, kv_cache=cache), cache

    def hidden_window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: BlockKVCache, start: int, end: int
    ) -> torch.Tensor:
        cache.set_window(start, end)
        return self.model.hidden(input_ids[:, start:end], attention_mask, kv_cache=cache)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.model.lm_head.weight

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    @property
    def last_layer(self) -> nn.Module:
        return self.model.layers[-1]


def as_adapter(model: nn.Module | DiffusionLMAdapter) -> DiffusionLMAdapter:
    """Wrap a supported base model in its adapter (an adapter is returned as is)."""
    if isinstance(model, DiffusionLMAdapter):
        return model
    if isinstance(model, MaskedDiffusionLM):
        return MDLMAdapter(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type == "Dream":
        from adjust.models.dream import DreamAdapter

        return DreamAdapter(model)
    if model_type == "llada":
        from adjust.models.llada import LLaDAAdapter

        return LLaDAAdapter(model)
    raise TypeError(
        f"model: unsupported base model {type(model).__name__} (config.model_type={model_type!r}); "
        "pass an adjust.MaskedDiffusionLM or a DiffusionLMAdapter subclass wrapping your model"
    )
