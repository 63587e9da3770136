"""The ADJUST sampler g (paper §3.2, Fig. 5).

    g(h, x) = h + Norm_out( DecoderLayer( DownProj( concat(Norm_e(E(x)), Norm_h(h)) ) ) )

- E and W are the frozen base embedding and LM head, reached through the base
  model's adapter at call time: they are shared, never copied into the checkpoint.
- DownProj: 2d -> d, no bias. The decoder layer has the base model's own
  architecture (bidirectional attention with RoPE at the same positions, GQA,
  SwiGLU, RMSNorm), built from the adapter's `layer_config`.

Choices the paper leaves open, and what we do:
- ``Norm_out`` weight starts at **0**, so an untrained sampler returns h unchanged
  and ADJUST reproduces naive parallel sampling exactly (tested); training moves it.
- The decoder layer is initialised as a copy of the base model's last layer when
  the layouts match (the paper's public code does the same), else randomly.
- DownProj starts as [I | I]: the layer first sees Norm_e(E(x)) + Norm_h(h), an
  input on the scale of a residual stream, rather than random noise.
- ``inputs``: which tokens x the sampler embeds. "all" (the paper's g): every current
  token. "new": only the tokens committed since the step's base forward; every other
  position reads as MASK. The base's hidden states already hold every token it saw, so
  nothing is lost, and the one thing g must act on — what was just committed — is the
  only token signal it gets instead of a few rows among every visible token (on a
  testbed whose joint KL sits in a few positions, "all" stayed on the parallel plateau
  for hundreds of steps; docs/training.md).
- ``positions``: F > 0 adds absolute positions to the layer input,
  u += PosProj([sin(ω_f p), cos(ω_f p)]_{f < F}), p the position RoPE uses (from the first non-pad
  token), periods geometric from 3 to 300 tokens, PosProj [d, 2F] starting at 0 (a fresh g is still
  naive parallel). RoPE gives the layer relative positions only; a dependency that is a function of
  the absolute position (a block that must mirror another: partner 15 − i) then has to be read from
  what h says about position, and on one mirror base g missed it: 57% / 54% / 22% of the gap at
  K = 2 / 4 / 8 without, 90% / 91% / 92% with (docs/training.md). 0: the paper's g (and every sampler
  saved before the option).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from adjust.checkpoint import ASSETS as _ASSETS
from adjust.checkpoint import CONFIG_NAME, device_and_dtype, load_config, load_weights, resolve, save_checkpoint
from adjust.context_cache import candidate_slots
from adjust.fields import check_types
from adjust.identity import check_base
from adjust.models.adapter import BaseModelInfo, DiffusionLMAdapter, as_adapter
from adjust.models.kv_cache import BlockKVCache
from adjust.models.layers import DecoderLayer, LayerConfig, RMSNorm, position_ids_from_mask, rope_cos_sin

ASSETS = _ASSETS / "samplers"
INPUTS = ("all", "new")
POSITION_PERIODS = (3.0, 300.0)  # the shortest and longest period of g's absolute-position sinusoids, in tokens


def check_positions(positions) -> None:
    """Refuse a ``positions`` that is not an int ≥ 0 (the sampler's and the trainer's setting)."""
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 0:
        raise ValueError(f"sampler positions must be an int ≥ 0 (sinusoid frequencies; 0 = none), got {positions!r}")


def position_features(pos: torch.Tensor, frequencies: int, dtype: torch.dtype) -> torch.Tensor:
    """[..., 2F] = [sin(ω_f p), cos(ω_f p)] of positions ``pos`` [...], F = ``frequencies`` periods
    geometric over `POSITION_PERIODS`."""
    lo, hi = POSITION_PERIODS
    ratio = torch.arange(frequencies, device=pos.device, dtype=torch.float32) / max(frequencies - 1, 1)
    angle = pos[..., None].float() * (2 * math.pi / (lo * (hi / lo) ** ratio))
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(dtype)


class AdjustSampler(nn.Module):
    """One-layer sampler updating the base model's hidden states with committed tokens."""

    def __init__(
        self, layer_config: LayerConfig, base: BaseModelInfo, extra: dict | None = None,
        data_fingerprint: str | None = None, inputs: str = "all", positions: int = 0,
    ):
        super().__init__()
        if inputs not in INPUTS:
            raise ValueError(f"sampler inputs must be one of {INPUTS}, got {inputs!r}")
        check_positions(positions)
        self.inputs = inputs
        self.position_frequencies = positions
        self.layer_config = layer_config
        self.base = base  # the base it is for, with its weight fingerprint (adjust.identity)
        self.data_fingerprint = data_fingerprint  # the trajectory set it was trained on
        self.extra = dict(extra or {})
        d = layer_config.hidden_size
        self.norm_e = RMSNorm(d, layer_config.rms_norm_eps)
        self.norm_h = RMSNorm(d, layer_config.rms_norm_eps)
        self.down_proj = nn.Linear(2 * d, d, bias=False)
        self.layer = DecoderLayer(layer_config)
        self.norm_out = RMSNorm(d, layer_config.rms_norm_eps)
        self.pos_proj = nn.Linear(2 * positions, d, bias=False) if positions else None
        with torch.no_grad():
            if self.pos_proj is not None:
                self.pos_proj.weight.zero_()
            eye = torch.eye(d)
            self.down_proj.weight.copy_(torch.cat([eye, eye], dim=1))
            self.norm_out.weight.zero_()
            for m in self.layer.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    @classmethod
    def from_base(cls, model, extra: dict | None = None, inputs: str = "all", positions: int = 0) -> "AdjustSampler":
        """A fresh sampler for `model` (its decoder layer copied from the base's last layer)."""
        adapter = as_adapter(model)
        sampler = cls(adapter.layer_config, adapter.info, extra, inputs=inputs, positions=positions)
        last = adapter.last_layer
        if last is not None:
            try:
                sampler.layer.load_state_dict(last.state_dict())
            except RuntimeError:  # different layout: keep the random initialisation
                pass
        return sampler.to(device=adapter.device, dtype=adapter.dtype)

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        adapter: DiffusionLMAdapter,
        attention_mask: torch.Tensor | None = None,
        kv_cache: BlockKVCache | None = None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        """h_{k+1} = g(h_k, x): h [B, L, d] hidden states, x [B, L] the current tokens. ``kv_cache``
        (recording, `adjust.sampler_block_cache`) keeps this pass's keys/values as layer ``layer_idx``."""
        pos = self.position_ids(x, attention_mask)
        u = self.layer_input(h, x, adapter, pos)
        cos, sin, key_mask = self.positions(x, attention_mask, u.dtype, pos)
        return h + self.norm_out(self.layer(u, cos, sin, key_mask, kv_cache, layer_idx))

    def forward_window(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        adapter: DiffusionLMAdapter,
        attention_mask: torch.Tensor | None,
        kv_cache: BlockKVCache,
        layer_idx: int,
        start: int,
        end: int,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """g at the rows [start, end) only, every other position's keys/values read from ``kv_cache``'s
        layer ``layer_idx`` (the block cache's rule applied to g, `adjust.sampler_block_cache`); the
        other rows of h come back as given. With ``rows`` [B, L] (bool, inside the window: a step's
        last pass) every window row is still a key and value but only those rows are computed further."""
        hw = h[:, start:end]
        pos = self.position_ids(x, attention_mask)
        u = self.layer_input(hw, x[:, start:end], adapter, pos[:, start:end])
        cos, sin, key_mask = self.positions(x, attention_mask, u.dtype, pos)
        cos, sin = cos[:, start:end], sin[:, start:end]
        kv_cache.set_window(start, end)
        if rows is None:
            new = hw + self.norm_out(self.layer(u, cos, sin, key_mask, kv_cache, layer_idx))
        else:
            idx, valid = candidate_slots(rows[:, start:end])
            at = idx[..., None].expand(-1, -1, h.shape[-1])
            hc = hw.gather(1, at)
            out = hc + self.norm_out(self.layer.forward_at(u, cos, sin, key_mask, idx, kv_cache, layer_idx))
            new = hw.scatter(1, at, torch.where(valid[..., None], out, hc))
        return torch.cat([h[:, :start], new, h[:, end:]], dim=1)

    def forward_rows(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        adapter: DiffusionLMAdapter,
        attention_mask: torch.Tensor | None,
        rows: torch.Tensor,
        kv_cache: BlockKVCache | None = None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        """g(h, x) at the rows ``rows`` [B, L] (bool) only; the other rows of h come back as given.

        Exact at those rows (every row is still a key and value; only their queries, attention output
        and MLP are skipped elsewhere): the last pass of a base step, whose other rows nothing reads.
        ``kv_cache`` (recording) keeps every row's keys/values as layer ``layer_idx``.
        """
        idx, valid = candidate_slots(rows)
        pos = self.position_ids(x, attention_mask)
        u = self.layer_input(h, x, adapter, pos)
        cos, sin, key_mask = self.positions(x, attention_mask, u.dtype, pos)
        at = idx[..., None].expand(-1, -1, h.shape[-1])
        hc = h.gather(1, at)
        new = hc + self.norm_out(self.layer.forward_at(u, cos, sin, key_mask, idx, kv_cache, layer_idx))
        return h.scatter(1, at, torch.where(valid[..., None], new, hc))

    def input_tokens(self, x: torch.Tensor, x_base: torch.Tensor, mask_token_id: int) -> torch.Tensor:
        """The tokens g embeds at a pass whose current tokens are ``x`` [B, L] after a base forward on ``x_base``:
        ``x`` itself (inputs "all"), or only the positions masked in ``x_base``, MASK elsewhere ("new")."""
        if self.inputs == "all":
            return x
        return torch.where(x_base == mask_token_id, x, torch.full_like(x, mask_token_id))

    def layer_input(
        self, h: torch.Tensor, x: torch.Tensor, adapter: DiffusionLMAdapter, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """u = DownProj(concat(Norm_e(E x), Norm_h h)) (+ the position term) of any rows h [..., d], x [...]
        at positions ``pos`` [...] (`position_ids`; needed only by a sampler with ``positions``)."""
        e = adapter.embed_tokens(x).to(h.dtype)
        u = self.down_proj(torch.cat([self.norm_e(e), self.norm_h(h)], dim=-1))
        term = self.position_term(pos) if self.pos_proj is not None else None
        return u if term is None else u + term.to(u.dtype)

    def position_term(self, pos: torch.Tensor | None) -> torch.Tensor | None:
        """PosProj(features(pos)) [..., d] of positions ``pos`` [...]: what absolute positions add to g's
        layer input; None for a sampler without ``positions``."""
        if self.pos_proj is None:
            return None
        if pos is None:
            raise ValueError("this sampler reads absolute positions (positions > 0): pass the rows' positions")
        return self.pos_proj(position_features(pos, self.position_frequencies, self.pos_proj.weight.dtype))

    @staticmethod
    def position_ids(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """[B, L] positions of x's rows as RoPE counts them: from the first non-pad token."""
        if attention_mask is None:
            return torch.arange(x.shape[1], device=x.device).expand_as(x)
        return position_ids_from_mask(attention_mask)

    def positions(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, dtype: torch.dtype, pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """RoPE cos, sin [B, L, D] at the positions of x [B, L] (left padding skipped; ``pos`` when the caller
        has them, `position_ids`) and the key mask."""
        pos = self.position_ids(x, attention_mask) if pos is None else pos
        key_mask = None if attention_mask is None else attention_mask.bool()
        cos, sin = rope_cos_sin(pos, self.layer_config.head_dim, self.layer_config.rope_theta, dtype)
        return cos, sin, key_mask

    def check_compatible(self, model, allow_base_mismatch: bool = False) -> None:
        """Refuse a base model this sampler was not trained for, or one on another device/dtype.

        Vocabulary, width and tokenizer must match; so must the weight fingerprint
        unless `allow_base_mismatch` (the same base re-saved); see `adjust.identity.check_base`.
        """
        adapter = as_adapter(model)
        check_base(self.base, adapter.info, "sampler", allow_base_mismatch)
        w = self.down_proj.weight
        if w.device != adapter.device or w.dtype != adapter.dtype:
            raise ValueError(
                f"sampler: on {w.device}/{w.dtype} but the base model is on {adapter.device}/{adapter.dtype}; "
                "move it with sampler.to(device=..., dtype=...)"
            )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | Path) -> Path:
        """Hub-style folder: config.json (base identity, layer config) + model.safetensors."""
        cfg = {"layer_config": self.layer_config.to_dict(), "base": asdict(self.base), "inputs": self.inputs,
               "positions": self.position_frequencies, "data_fingerprint": self.data_fingerprint, "extra": self.extra}
        save_checkpoint(path, self, "AdjustSampler", cfg)
        return Path(path)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> "AdjustSampler":
        """Load a folder written by `save_pretrained`, or a shipped sampler by name (weights checked against config.json)."""
        device, dtype = device_and_dtype(device, dtype)
        path = resolve(name_or_path, "samplers")
        raw = load_config(path, "AdjustSampler")
        try:
            base = BaseModelInfo(**raw["base"])
            check_types(base)  # a "vocab_size": "12" would read "vocab_size 12 vs base 12" at the base check
            sampler = cls(LayerConfig(**raw["layer_config"]), base, raw.get("extra"), raw.get("data_fingerprint"),
                          raw.get("inputs", "all"), raw.get("positions", 0))  # saved before the options: the paper's g
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path / CONFIG_NAME}: not a valid sampler config ({e})") from None
        load_weights(sampler, path)
        return sampler.to(device=device, dtype=dtype).eval()
