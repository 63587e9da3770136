"""`MaskedDiffusionLM`: the package's own small masked diffusion language model.

A Llama/Qwen2-style **bidirectional** transformer trained with the masked-diffusion
objective (LLaDA/MDLM): draw t ~ U(0, 1], mask each target token with probability t,
and minimise the cross-entropy on masked tokens weighted by 1/t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adjust.checkpoint import ASSETS as _ASSETS
from adjust.checkpoint import CONFIG_NAME, device_and_dtype, load_config, load_weights, resolve, save_checkpoint
from adjust.fields import check_id, check_positive, check_types
from adjust.models.kv_cache import BlockKVCache
from adjust.models.layers import DecoderLayer, LayerConfig, RMSNorm, position_ids_from_mask, rope_cos_sin

TOKENIZER_NAME = "tokenizer.json"
ASSETS = _ASSETS / "models"


@dataclass
class MDLMConfig:
    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    max_seq_len: int = 256
    mask_token_id: int = 3
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    name: str = "mdlm"
    tokenizer_fingerprint: str | None = None
    extra: dict = field(default_factory=dict)  # provenance: testbed, training command, ...

    def __post_init__(self) -> None:
        check_types(self)
        check_positive(self, "vocab_size", "num_layers", "max_seq_len")
        for name in ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
            check_id(self, name, self.vocab_size)
        self.layer_config  # noqa: B018 (validates the layer fields)

    @property
    def layer_config(self) -> LayerConfig:
        return LayerConfig(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            intermediate_size=self.intermediate_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            qkv_bias=self.qkv_bias,
        )


class MaskedDiffusionLM(nn.Module):
    """Bidirectional transformer LM with a masked-diffusion training loss."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.config = config
        lc = config.layer_config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(lc) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # SHA-256 of the checkpoint these weights were loaded from or last saved to (adjust.identity);
        # None for weights that never touched a file.
        self.fingerprint: str | None = None

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            # Unit-scale embeddings: tiny models stall with std 0.02 (DESIGN §6).
            nn.init.normal_(m.weight, std=1.0)

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: BlockKVCache | None = None,
    ) -> torch.Tensor:
        """Final post-norm hidden states [B, L, d]; `hidden[:, i] @ W.T` predicts token i.

        With ``kv_cache`` (a `BlockKVCache`, `adjust.base_cache`): an empty one records every
        layer's keys/values; one with a window [s, e) set makes this a forward over the window only:
        ``input_ids`` [B, e − s] are its rows, ``attention_mask`` still covers the whole sequence,
        the other positions' keys/values come from the cache, and the window's rows come out.
        """
        window = None if kv_cache is None else kv_cache.window
        if position_ids is None:
            if attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)
            else:
                width = input_ids.shape[1] if window is None else kv_cache.seq_len
                position_ids = torch.arange(width, device=input_ids.device).expand(input_ids.shape[0], width)
            if window is not None:
                position_ids = position_ids[:, window[0]:window[1]]
        x = self.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        key_mask = None if attention_mask is None else attention_mask.bool()
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, key_mask, kv_cache, i)
        return self.norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, L, V]."""
        return self.lm_head(self.hidden(input_ids, attention_mask, position_ids))

    def diffusion_loss(
        self,
        input_ids: torch.Tensor,
        loss_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: float = 1e-3,
    ) -> torch.Tensor:
        """Masked-diffusion loss (LLaDA eq. 3): E_t[ 1/t · Σ_masked CE ] / #target tokens.

        `loss_mask` marks the positions that may be masked (the completion); the
        prompt stays visible, as in LLaDA's SFT.
        """
        B, L = input_ids.shape
        dev = input_ids.device
        t = torch.rand(B, 1, device=dev, generator=generator) * (1 - eps) + eps
        noise = torch.rand(B, L, device=dev, generator=generator)
        masked = (noise < t) & loss_mask.bool()
        noisy = torch.where(masked, torch.full_like(input_ids, self.config.mask_token_id), input_ids)
        logits = self(noisy, attention_mask)
        ce = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")
        weights = (1.0 / t).expand(B, L)[masked]
        return (ce * weights).sum() / loss_mask.sum().clamp(min=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | Path, tokenizer=None) -> Path:
        """Write config.json + model.safetensors (+ tokenizer.json), each by temp file + rename."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if tokenizer is not None:
            from adjust.data.tokenizer import save_tokenizer, tokenizer_fingerprint

            self.config.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer)
            save_tokenizer(tokenizer, path / TOKENIZER_NAME)
        self.fingerprint = save_checkpoint(path, self, "MaskedDiffusionLM", asdict(self.config))
        return path

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> "MaskedDiffusionLM":
        """Load a folder written by `save_pretrained`, or a shipped model by name.

        The weights are checked against the SHA-256 in config.json; `device` and `dtype`
        may be strings ("cuda:0", "bf16").
        """
        device, dtype = device_and_dtype(device, dtype)
        path = resolve(name_or_path, "models")
        raw = load_config(path, "MaskedDiffusionLM")
        try:
            config = MDLMConfig(**raw)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path / CONFIG_NAME}: {e}") from None
        model = cls(config)
        model.fingerprint = load_weights(model, path)
        model.checkpoint_path = path
        return model.to(device=device, dtype=dtype).eval()

    def load_tokenizer(self):
        """The tokenizer saved beside the checkpoint (None if there is none).

        Refused (ValueError) when it is not the tokenizer config.json's fingerprint names.
        """
        from adjust.data.tokenizer import load_tokenizer, tokenizer_fingerprint

        path = getattr(self, "checkpoint_path", None)
        if path is None or not (path / TOKENIZER_NAME).is_file():
            return None
        tok = load_tokenizer(path / TOKENIZER_NAME)
        want, got = self.config.tokenizer_fingerprint, tokenizer_fingerprint(tok)
        if want is not None and got != want:
            raise ValueError(f"{path / TOKENIZER_NAME}: not this model's tokenizer (fingerprint {got[:12]}, "
                             f"{CONFIG_NAME} records {want[:12]}); was it copied from another model?")
        return tok
