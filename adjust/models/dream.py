"""Adapter for Hugging Face Dream models (``config.model_type == "Dream"``, remote code).

Dream (Dream-org/Dream-v0-*-7B, Dream-Coder, DiffuCoder) is a Qwen2 architecture made
bidirectional: ``model.model.{embed_tokens, layers, norm}`` and ``model.lm_head``.
What the adapter does:

- **shift**: Dream keeps Qwen2's causal-LM head layout, so the logits at position i
  predict token i + 1; Dream's own sampler shifts them right by one. We shift the
  final post-norm hidden states instead, ``cat([h[:, :1], h[:, :-1]], 1)``, so that
  ``logits(hidden)[:, i]`` predicts token i (position 0 repeats itself: it is never
  generated unless a prompt starts with a mask, as in Dream).
- **masks**: no padding -> Dream's ``"full"``; a 2-D left-padding mask -> a [B, 1, L, L]
  bool mask over the real keys and ``tok_idx`` positions counted from each row's first
  real token. Dream's own generation also masks the padded *query* rows; their outputs
  are never read, and leaving them a real key to attend to keeps every softmax row
  non-empty (an all-masked row is NaN on some SDPA kernels). Real positions get exactly
  Dream's results.
- **ids**: read from ``model.config`` then ``model.generation_config``, falling back to
  Dream's defaults (mask 151666, eos = pad = bos = 151643, ``<|endoftext|>``); an id
  outside the LM head's rows is refused (small models set their own ids in their config).

Only the inner ``model.model`` runs: the LM head is applied by the engine on the
masked rows alone, never on all [B, L, V] positions.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from adjust.identity import hf_weights_fingerprint
from adjust.models.adapter import BaseModelInfo, DiffusionLMAdapter
from adjust.models.kv_cache import BlockKVCache
from adjust.models.layers import LayerConfig, position_ids_from_mask

DREAM_MASK_TOKEN_ID = 151666
DREAM_EOS_TOKEN_ID = 151643  # <|endoftext|>: also Dream's pad and bos


def hf_token_id(model: nn.Module, name: str, default: int | None, vocab_size: int | None = None) -> int | None:
    """A special id (``"mask_token_id"``, ...) from the model's config, then its generation config, then `default`.

    A list (several eos ids) gives its first entry. With `vocab_size`, an id outside
    [0, vocab_size) raises ValueError naming where it came from: a family default that a
    small or re-tokenised model does not have must be set in its config, not carried along.
    """
    value, source = default, "the family default (not in model.config nor model.generation_config)"
    for where in ("config", "generation_config"):
        found = getattr(getattr(model, where, None), name, None)
        if isinstance(found, (list, tuple)):
            found = found[0] if found else None
        if found is not None:
            value, source = found, f"model.{where}.{name}"
            break
    if value is None:
        return None
    value = int(value)
    if vocab_size is not None and not 0 <= value < vocab_size:
        raise ValueError(f"{name}={value} ({source}) is outside the model's vocabulary [0, {vocab_size}); "
                         f"set model.config.{name} to the id this model uses")
    return value


def hf_tokenizer_fingerprint(tokenizer) -> str:
    """Fingerprint of a `tokenizers.Tokenizer` or a Hugging Face (fast or slow) tokenizer.

    Fast tokenizers hash their backend like the package's own tokenizers
    (`adjust.data.tokenizer.tokenizer_fingerprint`); slow ones (Dream's) hash their
    vocabulary with added tokens.
    """
    from adjust.data.tokenizer import tokenizer_fingerprint

    if hasattr(tokenizer, "to_str"):
        return tokenizer_fingerprint(tokenizer)
    if getattr(tokenizer, "backend_tokenizer", None) is not None:
        return tokenizer_fingerprint(tokenizer.backend_tokenizer)
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, separators=(",", ":")).encode("utf-8")).hexdigest()


def rope_theta(config, default: float = 10000.0) -> float:
    """RoPE base from a config: ``rope_theta`` (transformers 4.x) or ``rope_parameters`` (5.x)."""
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    return float(theta if theta is not None else default)


class DreamAdapter(DiffusionLMAdapter):
    """Wraps a Hugging Face Dream model (``AutoModel.from_pretrained(..., trust_remote_code=True)``)."""

    def __init__(self, model: nn.Module, tokenizer=None):
        c = model.config
        self.model = model
        # The LM head's rows, not config.vocab_size: they are what the logits index.
        self.vocab_size = V = model.lm_head.weight.shape[0]
        self.mask_token_id = hf_token_id(model, "mask_token_id", DREAM_MASK_TOKEN_ID, V)
        self.eos_token_id = hf_token_id(model, "eos_token_id", DREAM_EOS_TOKEN_ID, V)
        self.pad_token_id = hf_token_id(model, "pad_token_id", self.eos_token_id, V)
        self.bos_token_id = hf_token_id(model, "bos_token_id", self.eos_token_id, V)
        self.hidden_size = c.hidden_size
        self.max_seq_len = getattr(c, "max_position_embeddings", None)
        heads = c.num_attention_heads
        self.layer_config = LayerConfig(
            hidden_size=c.hidden_size,
            num_heads=heads,
            num_kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
            intermediate_size=c.intermediate_size,
            rms_norm_eps=c.rms_norm_eps,
            rope_theta=rope_theta(c),
            qkv_bias=model.model.layers[-1].self_attn.q_proj.bias is not None,
        )
        fingerprint = None if tokenizer is None else hf_tokenizer_fingerprint(tokenizer)
        self.info = BaseModelInfo(getattr(c, "_name_or_path", "") or "Dream", self.vocab_size, c.hidden_size, fingerprint,
                                  hf_weights_fingerprint(model))

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            mask, positions = "full", None
        else:
            keep = attention_mask.bool()
            B, L = keep.shape
            mask = keep[:, None, None, :].expand(B, 1, L, L)
            positions = position_ids_from_mask(attention_mask)
        # Every option explicit: nothing is read from the config (transformers 5 configs lack `use_cache`).
        h = self.model.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False,
                             output_attentions=False, output_hidden_states=False, return_dict=False)[0]
        return torch.cat([h[:, :1], h[:, :-1]], dim=1)

    @property
    def supports_base_cache(self) -> bool:
        return True

    def _cached_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: BlockKVCache,
                        start: int, end: int) -> torch.Tensor:
        """Dream's own forward over the rows [start, end) (unshifted), its attention reading and writing
        keys/values through ``cache``: Dream's attention calls ``past_key_value.update(k, v, layer_idx)``
        (Hugging Face's Cache protocol), which is all a `BlockKVCache` needs."""
        B, L = input_ids.shape
        if attention_mask is None:
            mask, positions = "full", torch.arange(start, end, device=input_ids.device)[None]
        else:
            mask = attention_mask.bool()[:, None, None, :].expand(B, 1, end - start, L)
            positions = position_ids_from_mask(attention_mask)[:, start:end]
        rows = torch.arange(start, end, device=input_ids.device)
        return self.model.model(input_ids=input_ids[:, start:end], attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True, cache_position=rows, output_attentions=False,
                                output_hidden_states=False, return_dict=False)[0]

    def hidden_and_cache(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BlockKVCache]:
        cache = BlockKVCache()
        h = self._cached_forward(input_ids, attention_mask, cache, 0, input_ids.shape[1])
        return torch.cat([h[:, :1], h[:, :-1]], dim=1), cache

    def hidden_window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: BlockKVCache, start: int, end: int
    ) -> torch.Tensor:
        """Row i's logits come from Dream's output at i − 1, so the rows [start − 1, end) are recomputed:
        every window row gets its own shifted state (Fast-dLLM's Dream code recomputes [start, end) and
        instead commits the block's first token at the block's full forward, whose logits it then lacks)."""
        first = max(start - 1, 0)
        cache.set_window(first, end)
        h = self._cached_forward(input_ids, attention_mask, cache, first, end)
        return h[:, : end - start] if start > 0 else torch.cat([h[:, :1], h[:, :-1]], dim=1)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.model.lm_head.weight

    @property
    def lm_head_bias(self) -> torch.Tensor | None:
        return self.model.lm_head.bias

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.model.embed_tokens

    @property
    def last_layer(self) -> nn.Module:
        """Dream's last decoder layer: Qwen2 parameter names, the same as `adjust.models.layers.DecoderLayer`."""
        return self.model.model.layers[-1]
