"""Tiny Hugging Face models laid out like Dream and LLaDA, for the adapter tests.

The real checkpoints (7-8B, remote code) cannot be downloaded here, so these
random-weight `transformers` models reproduce what the adapters rely on:

- `TinyDreamModel` (``config.model_type == "Dream"``): ``model.model.{embed_tokens,
  layers, norm}`` built from transformers' own Qwen2 decoder layers made
  bidirectional (as Dream's attention is), ``model.lm_head``; ``forward(input_ids,
  attention_mask, position_ids)`` takes Dream's ``"full"`` / 4-D bool masks and
  ``tok_idx`` positions and returns ``.logits`` with Dream's layout (logits[i]
  predicts token i + 1) and ``.hidden_states`` (last = after ``model.model.norm``).
- `TinyLLaDAModelLM` (``config.model_type == "llada"``): ``model.model.transformer.
  {wte, blocks[i], ln_f, ff_out}``, each block a minimal re-implementation of
  ``LLaDALlamaBlock`` (RMSNorm, RoPE at positions 0..L-1 whatever the padding,
  bidirectional GQA attention, SwiGLU with ``ff_proj`` as the gate); a 2-D attention
  mask becomes an additive key bias, as in ``modeling_llada.py``; no shift.

Vocabularies are small, so the configs carry the special ids (``mask_token_id`` etc.),
which the adapters read before falling back to each family's defaults.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel, Qwen2Config
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast, MaskedLMOutput
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RMSNorm, Qwen2RotaryEmbedding

VOCAB, MASK, BOS, EOS = 64, 63, 1, 2


class TinyDreamConfig(Qwen2Config):
    model_type = "Dream"
    mask_token_id: int = 151666


class TinyDreamBaseModel(nn.Module):
    """Dream's `DreamBaseModel` layout: embeddings, bidirectional Qwen2 layers, final norm."""

    def __init__(self, config: TinyDreamConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        for layer in self.layers:
            layer.self_attn.is_causal = False  # Dream's attention is bidirectional
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | str | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutput:
        if isinstance(attention_mask, str):  # Dream's "full": no padding
            attention_mask = None
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        h = self.embed_tokens(input_ids)
        rope = self.rotary_emb(h, position_ids)
        states = []
        for layer in self.layers:
            states.append(h)
            h = layer(h, attention_mask=attention_mask, position_ids=position_ids, position_embeddings=rope)
        h = self.norm(h)
        states.append(h)
        return BaseModelOutput(last_hidden_state=h, hidden_states=tuple(states) if output_hidden_states else None)


class TinyDreamModel(PreTrainedModel):
    """Dream's top-level `DreamModel`: ``.model`` and ``.lm_head``; logits[i] predicts token i + 1."""

    config_class = TinyDreamConfig
    base_model_prefix = "model"
    _supports_sdpa = True  # SDPA takes Dream's 4-D bool masks (eager wants additive ones)

    def __init__(self, config: TinyDreamConfig):
        super().__init__(config)
        self.model = TinyDreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | str | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> MaskedLMOutput:
        out = self.model(input_ids, attention_mask, position_ids, output_hidden_states)
        return MaskedLMOutput(logits=self.lm_head(out.last_hidden_state), hidden_states=out.hidden_states)


class TinyLLaDAConfig(PreTrainedConfig):
    model_type = "llada"
    d_model: int = 32
    n_heads: int = 4
    n_kv_heads: int | None = 2
    n_layers: int = 2
    mlp_hidden_size: int = 64
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    vocab_size: int = VOCAB
    max_sequence_length: int = 128
    weight_tying: bool = False
    scale_logits: bool = False
    mask_token_id: int = 126336
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None


class TinyLLaDARMSNorm(nn.Module):
    """LLaDA's `RMSLayerNorm`: normalise in fp32, cast back, scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def _llada_rope(t: torch.Tensor, theta: float) -> torch.Tensor:
    """LLaDA's `RotaryEmbedding` on [B, H, L, D], positions 0..L-1 (left padding is not skipped)."""
    L, D = t.shape[-2], t.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float32, device=t.device) / D)
    freqs = torch.outer(torch.arange(L, dtype=torch.float32, device=t.device), inv_freq)
    pos = torch.cat([freqs, freqs], -1)
    x1, x2 = t.float().view(*t.shape[:-1], 2, D // 2).unbind(-2)
    return (t.float() * pos.cos() + torch.cat([-x2, x1], -1) * pos.sin()).to(t.dtype)


class TinyLLaDABlock(nn.Module):
    """`LLaDALlamaBlock`: x + attn_out(Attn(attn_norm(x))), then + ff_out(silu(ff_proj(.)) * up_proj(.))."""

    def __init__(self, c: TinyLLaDAConfig):
        super().__init__()
        self.c = c
        d, hd = c.d_model, c.d_model // c.n_heads
        kv = c.n_kv_heads or c.n_heads
        self.attn_norm = TinyLLaDARMSNorm(d, c.rms_norm_eps)
        self.ff_norm = TinyLLaDARMSNorm(d, c.rms_norm_eps)
        self.q_proj = nn.Linear(d, c.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, kv * hd, bias=False)
        self.v_proj = nn.Linear(d, kv * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, c.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, c.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(c.mlp_hidden_size, d, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor | None = None) -> torch.Tensor:
        B, L, d = x.shape
        c = self.c
        h = self.attn_norm(x)
        q, k, v = (p(h).view(B, L, -1, d // c.n_heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = _llada_rope(q, c.rope_theta), _llada_rope(k, c.rope_theta)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_bias, is_causal=False)
        x = x + self.attn_out(att.transpose(1, 2).reshape(B, L, d))
        h = self.ff_norm(x)
        h, h_up = self.ff_proj(h), self.up_proj(h)
        return x + self.ff_out(self.act(h) * h_up)


class TinyLLaDAModel(nn.Module):
    """`LLaDAModel`: ``transformer.{wte, blocks, ln_f, ff_out}``; hidden_states[-1] is after ln_f."""

    def __init__(self, c: TinyLLaDAConfig):
        super().__init__()
        self.config = c
        parts = dict(
            wte=nn.Embedding(c.vocab_size, c.d_model),
            blocks=nn.ModuleList(TinyLLaDABlock(c) for _ in range(c.n_layers)),
            ln_f=TinyLLaDARMSNorm(c.d_model, c.rms_norm_eps),
        )
        if not c.weight_tying:
            parts["ff_out"] = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.transformer = nn.ModuleDict(parts)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states: bool | None = None
    ) -> CausalLMOutputWithPast:
        x = self.transformer.wte(input_ids)
        bias = None
        if attention_mask is not None:  # LLaDA: [B, 1, 1, L] additive bias on padded keys
            keep = attention_mask.to(x.dtype)[:, None, None, :]
            bias = (1.0 - keep) * torch.finfo(x.dtype).min
        states = []
        for block in self.transformer.blocks:
            states.append(x)
            x = block(x, bias)
        x = self.transformer.ln_f(x)
        states.append(x)
        if self.config.weight_tying:
            logits = F.linear(x, self.transformer.wte.weight)
        else:
            logits = self.transformer.ff_out(x)
        return CausalLMOutputWithPast(logits=logits, hidden_states=tuple(states) if output_hidden_states else None)


class TinyLLaDAModelLM(PreTrainedModel):
    """`LLaDAModelLM`: the HF wrapper whose ``.model`` is the `LLaDAModel`."""

    config_class = TinyLLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config: TinyLLaDAConfig):
        super().__init__(config)
        self.model = TinyLLaDAModel(config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states: bool | None = None
    ) -> CausalLMOutputWithPast:
        return self.model(input_ids, attention_mask, output_hidden_states)


def _randomise(model: nn.Module, seed: int) -> None:
    """Weights that mix the context strongly (std 1/sqrt(fan_in), unit embeddings).

    A std-0.02 init leaves near-uniform logits, where greedy ties and entropy ties
    would make the T = 0 equality tests fragile. Norm weights and biases are made
    non-trivial too, so that copying them is actually checked.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # qkv biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "wte" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def tiny_dream(seed: int = 0, sharpen: float = 3.0) -> TinyDreamModel:
    """A random 2-layer Dream-layout model (vocab 64, d 32, GQA 4/2 heads, qkv bias)."""
    config = TinyDreamConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        mask_token_id=MASK, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
    )
    model = TinyDreamModel(config).eval()
    _randomise(model, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)  # peaked marginals
    return model


def tiny_llada(seed: int = 0, sharpen: float = 3.0, weight_tying: bool = False) -> TinyLLaDAModelLM:
    """A random 2-layer LLaDA-layout model (vocab 64, d 32, GQA 4/2 heads, no biases).

    With `weight_tying` the LM head is the unit-scale embedding (already peaked, not sharpened).
    """
    config = TinyLLaDAConfig(weight_tying=weight_tying, mask_token_id=MASK, bos_token_id=BOS, eos_token_id=EOS,
                             pad_token_id=EOS)
    model = TinyLLaDAModelLM(config).eval()
    _randomise(model, seed)
    if not weight_tying:
        with torch.no_grad():
            model.model.transformer.ff_out.weight.mul_(sharpen)  # peaked marginals
    return model


def dream_padding_inputs(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's own mask and `tok_idx` for a 2-D left-padding mask (its generation_utils `_sample`)."""
    tok_idx = attention_mask.long().cumsum(-1) - 1
    tok_idx.masked_fill_(attention_mask == 0, 1)
    mask4d = torch.logical_and(attention_mask.unsqueeze(1).unsqueeze(-2), attention_mask.unsqueeze(1).unsqueeze(-1))
    return mask4d.bool(), tok_idx
