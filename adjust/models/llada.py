"""Adapter for Hugging Face LLaDA models (``config.model_type == "llada"``, remote code).

LLaDA (GSAI-ML/LLaDA-8B-Base / -Instruct, LLaDA-1.5) is an OLMo-style bidirectional
transformer: ``model.model.transformer.{wte, blocks[i], ln_f, ff_out}``, where
``ff_out`` is the LM head (absent under ``weight_tying``: the head is then ``wte``).
What the adapter does:

- **no shift**: the logits at position i predict token i.
- **hidden**: ``modeling_llada.py`` appends the state *after* ``ln_f`` as the last
  ``hidden_states`` entry ("following HuggingFace's convention"), so that is the
  post-norm hidden state. Its forward always applies the LM head too, so each base
  forward also pays for full [B, L, V] logits that are thrown away.
- **masks**: the 2-D left-padding mask is passed as is (LLaDA turns it into an
  additive bias on padded keys). LLaDA's RoPE uses positions 0..L-1 whatever the
  padding; attention only sees position differences, so a padded row still gets
  the same result as alone (up to rounding).
- **ids**: read from ``model.config`` then ``model.generation_config``, falling back to
  LLaDA's defaults (mask 126336, eos = pad 126081 ``<|endoftext|>``, bos 126080
  ``<|startoftext|>``; ``eot_token_id`` 126348 ``<|eot_id|>`` ends Instruct turns); an id
  outside the LM head's rows is refused (small models set their own ids in their config).
"""

from __future__ import annotations

import torch
from torch import nn

from adjust.identity import hf_weights_fingerprint
from adjust.models.adapter import BaseModelInfo, DiffusionLMAdapter
from adjust.models.dream import hf_token_id, hf_tokenizer_fingerprint, rope_theta
from adjust.models.layers import LayerConfig

LLADA_MASK_TOKEN_ID = 126336
LLADA_EOS_TOKEN_ID = 126081  # <|endoftext|>, also LLaDA's pad
LLADA_BOS_TOKEN_ID = 126080  # <|startoftext|>
LLADA_EOT_TOKEN_ID = 126348  # <|eot_id|>

# adjust DecoderLayer name -> LLaDALlamaBlock attribute. LLaDA's MLP is
# ff_out(act(ff_proj(x)) * up_proj(x)), so ff_proj is the gate.
LLADA_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "q_proj",
    "self_attn.k_proj": "k_proj",
    "self_attn.v_proj": "v_proj",
    "self_attn.o_proj": "attn_out",
    "post_attention_layernorm": "ff_norm",
    "mlp.gate_proj": "ff_proj",
    "mlp.up_proj": "up_proj",
    "mlp.down_proj": "ff_out",
}


class LLaDALayerView(nn.Module):
    """A LLaDA Llama block's modules registered under `DecoderLayer` names.

    It shares the block's parameters (no copy) and has no forward: its `state_dict`
    is what `AdjustSampler.from_base` loads into the sampler's decoder layer.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.self_attn, self.mlp = nn.Module(), nn.Module()
        for ours, theirs in LLADA_LAYER_NAMES.items():
            parent, _, name = ours.rpartition(".")
            (self.get_submodule(parent) if parent else self).add_module(name, getattr(block, theirs))


class LLaDAAdapter(DiffusionLMAdapter):
    """Wraps a Hugging Face LLaDA model (``AutoModel.from_pretrained(..., trust_remote_code=True)``)."""

    def __init__(self, model: nn.Module, tokenizer=None):
        c = model.config
        if getattr(c, "scale_logits", False):
            raise ValueError("LLaDA config.scale_logits=True is not supported: the logits would not be W·h")
        self.model = model
        self.transformer = model.model.transformer
        # The LM head's rows (config.embedding_size when set), not config.vocab_size.
        self.vocab_size = V = self.lm_head_weight.shape[0]
        self.mask_token_id = hf_token_id(model, "mask_token_id", LLADA_MASK_TOKEN_ID, V)
        self.eos_token_id = hf_token_id(model, "eos_token_id", LLADA_EOS_TOKEN_ID, V)
        self.pad_token_id = hf_token_id(model, "pad_token_id", self.eos_token_id, V)
        # LLaDA-8B's config has no bos id: the default is its tokenizer's <|startoftext|>.
        self.bos_token_id = hf_token_id(model, "bos_token_id", LLADA_BOS_TOKEN_ID, V)
        self.eot_token_id = hf_token_id(model, "eot_token_id", LLADA_EOT_TOKEN_ID, V)
        self.hidden_size = c.d_model
        self.max_seq_len = getattr(c, "max_sequence_length", None)
        block = self._last_block
        self.layer_config = LayerConfig(
            hidden_size=c.d_model,
            num_heads=c.n_heads,
            num_kv_heads=getattr(c, "n_kv_heads", None) or c.n_heads,
            head_dim=c.d_model // c.n_heads,
            intermediate_size=block.ff_proj.out_features,
            rms_norm_eps=getattr(c, "rms_norm_eps", 1e-5),
            rope_theta=rope_theta(c),
            qkv_bias=getattr(getattr(block, "q_proj", None), "bias", None) is not None,
        )
        fingerprint = None if tokenizer is None else hf_tokenizer_fingerprint(tokenizer)
        self.info = BaseModelInfo(getattr(c, "_name_or_path", "") or "LLaDA", self.vocab_size, c.d_model, fingerprint,
                                  hf_weights_fingerprint(model))

    @property
    def _last_block(self) -> nn.Module:
        # block_group_size > 1 groups the blocks; LLaDA-8B keeps them flat.
        if "blocks" in self.transformer:
            return self.transformer.blocks[-1]
        return self.transformer.block_groups[-1][-1]

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # use_cache/return_dict explicit: LLaDA reads them from the config otherwise (transformers 5 drops use_cache).
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                         output_hidden_states=True, return_dict=True)
        return out.hidden_states[-1]

    @property
    def lm_head_weight(self) -> torch.Tensor:
        if "ff_out" in self.transformer:
            return self.transformer.ff_out.weight
        return self.transformer.wte.weight  # weight_tying

    @property
    def lm_head_bias(self) -> torch.Tensor | None:
        return self.transformer.ff_out.bias if "ff_out" in self.transformer else None

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.transformer.wte

    @property
    def last_layer(self) -> nn.Module | None:
        """The last block seen under `DecoderLayer` names (None for a non-Llama block type)."""
        block = self._last_block
        if not all(hasattr(block, name) for name in LLADA_LAYER_NAMES.values()):
            return None
        return LLaDALayerView(block)
