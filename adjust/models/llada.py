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
from adjust.models.kv_cache import BlockKVCache
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


LLAMA_BLOCK_PARTS = ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out",
                     "rotary_emb")


def _rope_rows(rope: nn.Module, q: torch.Tensor, k: torch.Tensor, start: int, end: int,
               length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA's ``RotaryEmbedding.forward`` for rows at the positions [start, end) of a sequence of
    ``length`` (its own forward places the queries at the end of the keys)."""
    q_, k_ = (q.float(), k.float()) if rope.config.rope_full_precision else (q, k)
    with torch.autocast(q.device.type, enabled=False):
        sin, cos = rope.get_rotary_embedding(length, q_.device)
        sin, cos = sin.type_as(q_)[:, :, start:end], cos.type_as(q_)[:, :, start:end]
        q_ = rope.apply_rotary_pos_emb(sin, cos, q_)
        k_ = rope.apply_rotary_pos_emb(sin, cos, k_)
    return q_.type_as(q), k_.type_as(k)


def _llama_block_rows(block: nn.Module, x: torch.Tensor, bias: torch.Tensor | None, cache: BlockKVCache, layer: int,
                      start: int, end: int) -> torch.Tensor:
    """``LLaDALlamaBlock.forward`` (eval mode) on the rows x [B, T, d] at positions [start, end): the same
    submodules in the same order, attention over the cached keys/values with these rows' written in."""
    c = block.config
    B, T, C = x.shape
    xn = block.attn_norm(x)
    q, k, v = block.q_proj(xn), block.k_proj(xn), block.v_proj(xn)
    dtype = k.dtype
    if block.q_norm is not None and block.k_norm is not None:
        q, k = block.q_norm(q).to(dtype=dtype), block.k_norm(k).to(dtype=dtype)
    head_dim = C // c.n_heads
    q = q.view(B, T, c.n_heads, head_dim).transpose(1, 2)
    k = k.view(B, T, c.effective_n_kv_heads, head_dim).transpose(1, 2)
    v = v.view(B, T, c.effective_n_kv_heads, head_dim).transpose(1, 2)
    q, k = _rope_rows(block.rotary_emb, q, k, start, end, cache.seq_len)
    k, v = cache.update(k, v, layer)
    mask = None if bias is None else block._cast_attn_bias(bias, dtype)
    att = block._scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    x = x + block.dropout(block.attn_out(att.transpose(1, 2).contiguous().view(B, T, C)))
    h = block.ff_norm(x)
    h = block.act(block.ff_proj(h)) * block.up_proj(h)
    return x + block.dropout(block.ff_out(h))


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
    def _blocks(self) -> list[nn.Module]:
        if "blocks" in self.transformer:
            return list(self.transformer.blocks)
        return [block for group in self.transformer.block_groups for block in group]

    @property
    def supports_base_cache(self) -> bool:
        """LLaDA's forward refuses a KV cache ("not supported for MDM"), so the cached forward calls the
        blocks' submodules itself: Llama blocks (LLaDA-8B's) with RoPE only."""
        return bool(getattr(self.model.model.config, "rope", False)) and all(
            hasattr(block, name) for block in self._blocks for name in LLAMA_BLOCK_PARTS)

    def _require_cache(self) -> None:
        if not self.supports_base_cache:
            raise ValueError("LLaDA base_cache: only Llama blocks with RoPE (LLaDA-8B's layout) have the cached "
                             "forward; this model has another block type (use base_cache=None)")

    def hidden_and_cache(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BlockKVCache]:
        """LLaDA's own forward; each block's rotated keys (its ``rotary_emb`` output) and values (its
        ``v_proj`` output) are read by forward hooks, removed afterwards."""
        self._require_cache()
        blocks = self._blocks
        keys: list[torch.Tensor | None] = [None] * len(blocks)
        values: list[torch.Tensor | None] = [None] * len(blocks)
        hooks = []
        for i, block in enumerate(blocks):
            hooks.append(block.rotary_emb.register_forward_hook(lambda m, a, out, i=i: keys.__setitem__(i, out[1])))
            hooks.append(block.v_proj.register_forward_hook(lambda m, a, out, i=i: values.__setitem__(i, out)))
        try:
            h = self.hidden(input_ids, attention_mask)
        finally:
            for hook in hooks:
                hook.remove()
        cache = BlockKVCache()
        for i, (k, v) in enumerate(zip(keys, values)):
            B, L, _ = v.shape
            cache.update(k, v.view(B, L, k.shape[1], k.shape[3]).transpose(1, 2), i)
        return h, cache

    def hidden_window(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: BlockKVCache, start: int, end: int
    ) -> torch.Tensor:
        """LLaDA's forward (``LLaDAModel.forward`` with Llama blocks) over the rows [start, end), op for op,
        with RoPE at those rows' positions and keys/values through ``cache``."""
        self._require_cache()
        cache.set_window(start, end)
        t, config = self.transformer, self.model.model.config
        B, L = input_ids.shape
        x = t.wte(input_ids[:, start:end])
        if config.input_emb_norm:
            x = x * (config.d_model**0.5)
        x = t.emb_drop(x)
        bias = None
        if attention_mask is not None and 0.0 in attention_mask:  # LLaDA's padding bias on the keys
            keep = attention_mask.to(dtype=torch.float).view(B, -1)[:, None, None, :]
            bias = ((1.0 - keep) * torch.finfo(keep.dtype).min).expand(B, 1, end - start, L)
        for i, block in enumerate(self._blocks):
            x = _llama_block_rows(block, x, bias, cache, i, start, end)
        return t.ln_f(x)

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
