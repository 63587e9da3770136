"""Tiny random-weight instances of the REAL Dream and LLaDA Hugging Face classes.

The real remote code (``modeling_dream.py``, ``generation_utils.py``, ``modeling_llada.py``,
``generate.py``) lies in ``<repo>/../shared/peer-code/`` (its README gives sources and
licences). It is loaded from there at test time, never copied into the project; where the
folder is absent (a user's clone) every test that needs it is skipped, saying why.

The tiny models keep each family's real config (``config.json`` of Dream-v0-Instruct-7B,
``config_LLaDA-8B-Instruct.json``) and shrink only the sizes: hidden 64, 2 layers, 4 query
/ 2 KV heads, a 100-token vocabulary (LLaDA: 128 LM-head rows, padded as its 126464 are)
with the special ids moved inside it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

PEER_CODE = Path(os.environ.get("ADJUST_PEER_CODE", Path(__file__).resolve().parents[1].parent / "shared" / "peer-code"))

VOCAB = 100
LLADA_HEAD_ROWS = 128  # embedding_size > vocab_size, as LLaDA-8B pads 126464 rows (a multiple of 128)
DREAM_IDS = dict(mask_token_id=98, bos_token_id=97, eos_token_id=97, pad_token_id=97)  # Dream: bos = eos = pad
LLADA_IDS = dict(mask_token_id=98, bos_token_id=95, eos_token_id=96, pad_token_id=96, eot_token_id=97)
SHAPE = dict(hidden=64, layers=2, heads=4, kv_heads=2, mlp=96)


def supported_transformers():
    """The transformers range of the package's `hf` extra (pyproject.toml), the one the real code is tested on."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    for line in requires("adjust") or []:
        req = Requirement(line)
        if req.name == "transformers" and req.marker is not None and req.marker.evaluate({"extra": "hf"}):
            return req.specifier
    raise LookupError("pyproject.toml: the `hf` extra names no transformers range")


def _need_peer_code() -> None:
    if not PEER_CODE.is_dir():
        pytest.skip(f"the real Dream/LLaDA code is not here ({PEER_CODE} is absent; CI lays ../shared beside the repo)")
    transformers = pytest.importorskip("transformers", reason="the real Dream/LLaDA code needs the `hf` extra")

    spec = supported_transformers()
    if transformers.__version__ not in spec and not os.environ.get("ADJUST_HF_ANY_TRANSFORMERS"):
        pytest.skip(f"the real Dream/LLaDA code is tested on transformers{spec} (the `hf` extra); "
                    f"{transformers.__version__} is installed (ADJUST_HF_ANY_TRANSFORMERS=1 runs these tests anyway)")


def _package(name: str, folder: Path) -> ModuleType:
    """Import `folder` as package `name` so the remote code's relative imports (`.configuration_dream`) work."""
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module = importlib.util.module_from_spec(spec)
        module.__path__ = [str(folder)]
        sys.modules[name] = module
    return sys.modules[name]


def peer_module(family: str, module: str) -> ModuleType:
    """A module of the real code, e.g. ``peer_module("dream", "modeling_dream")`` (skips where absent)."""
    _need_peer_code()
    package = f"peer_code_{family}"
    _package(package, PEER_CODE / family)
    return importlib.import_module(f"{package}.{module}")


def _randomise(model: nn.Module, seed: int, sharpen: float, head: nn.Linear) -> None:
    """Weights that mix the context strongly (std 1/sqrt(fan_in), unit embeddings), a sharpened head.

    A std-0.02 init leaves near-uniform logits where greedy and score ties would make T = 0
    equalities fragile; norm weights and biases are made non-trivial so copying them is checked.
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
        head.weight.mul_(sharpen)


def dream_config(**overrides):
    """Dream-v0-Instruct-7B's config.json at tiny size, as a real `DreamConfig`."""
    DreamConfig = peer_module("dream", "configuration_dream").DreamConfig
    c = json.loads((PEER_CODE / "dream" / "config.json").read_text())
    for key in ("_name_or_path", "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype"):
        c.pop(key, None)
    c.update(vocab_size=VOCAB, hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["mlp"],
             num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
             num_key_value_heads=SHAPE["kv_heads"], max_window_layers=SHAPE["layers"], max_position_embeddings=256,
             **DREAM_IDS)
    c.update(overrides)
    return DreamConfig(**c)


def tiny_dream(seed: int = 0, sharpen: float = 3.0, **overrides) -> nn.Module:
    """A random 2-layer real `DreamModel` (hidden 64, GQA 4/2 heads, qkv bias, vocab 100), in eval mode."""
    DreamModel = peer_module("dream", "modeling_dream").DreamModel
    model = DreamModel(dream_config(**overrides)).eval()
    _randomise(model, seed, sharpen, model.lm_head)
    return model


def llada_config(**overrides):
    """LLaDA-8B-Instruct's config at tiny size, as a real `LLaDAConfig`."""
    LLaDAConfig = peer_module("llada", "configuration_llada").LLaDAConfig
    c = json.loads((PEER_CODE / "llada" / "config_LLaDA-8B-Instruct.json").read_text())
    for key in ("architectures", "auto_map", "model_type", "transformers_version"):
        c.pop(key, None)
    c.update(d_model=SHAPE["hidden"], n_layers=SHAPE["layers"], n_heads=SHAPE["heads"], n_kv_heads=SHAPE["kv_heads"],
             mlp_hidden_size=SHAPE["mlp"], vocab_size=VOCAB, embedding_size=LLADA_HEAD_ROWS, max_sequence_length=256,
             **LLADA_IDS)
    c.update(overrides)
    return LLaDAConfig(**c)


def tiny_llada(seed: int = 0, sharpen: float = 3.0, **overrides) -> nn.Module:
    """A random 2-layer real `LLaDAModelLM` (hidden 64, GQA 4/2 heads, 128 head rows), in eval mode.

    With ``weight_tying=True`` the head is the unit-scale embedding (already peaked, not sharpened).
    """
    LLaDAModelLM = peer_module("llada", "modeling_llada").LLaDAModelLM
    model = LLaDAModelLM(llada_config(**overrides)).eval()
    t = model.model.transformer
    _randomise(model, seed, 1.0 if model.config.weight_tying else sharpen, t.wte if model.config.weight_tying else t.ff_out)
    return model


def dream_padding_inputs(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's own 4-D mask and `tok_idx` for a 2-D left-padding mask (as its generation_utils `_sample` builds them)."""
    tok_idx = attention_mask.long().cumsum(-1) - 1
    tok_idx.masked_fill_(attention_mask == 0, 1)
    mask4d = torch.logical_and(attention_mask.unsqueeze(1).unsqueeze(-2), attention_mask.unsqueeze(1).unsqueeze(-1))
    return mask4d, tok_idx
