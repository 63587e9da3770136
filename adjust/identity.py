"""Content fingerprints of base models, trajectory sets and samplers, and the check that compares bases.

What each fingerprint covers (docs/reliability.md, "Identity"):

- a package checkpoint (`MaskedDiffusionLM`, `AdjustSampler`, `Judge`): the SHA-256 of
  its `model.safetensors`, recorded in `config.json` as `weights_sha256` when it is
  saved and verified when it is loaded (a flipped byte is an error). The base model's
  fingerprint is that hash: re-saving the same tensors gives the same bytes, so the
  same fingerprint; another dtype or any changed weight gives another.
- a Hugging Face base (Dream, LLaDA; 15-16 GB): hashing every byte at each load is not
  cheap, so its fingerprint is `hf_weights_fingerprint`: the config (without the
  load-time keys `_name_or_path`, `transformers_version`, `torch_dtype`/`dtype`) and, for
  every parameter tensor, its name, shape and 256 evenly spaced values in fp32. It tells
  two checkpoints apart (another fine-tune changes every sampled tensor) but is no
  integrity check of the files; the Hub's own per-file sha256 is that.
- a trajectory set: `trajectories_fingerprint` of its manifest's shard list (each
  shard's SHA-256, verified at load), so it changes with any shard's content.
- the data of `train-base`: `examples_fingerprint` of the exact training examples
  and the tokenizer's fingerprint.

Trajectories record the fingerprint of the base that made them (manifest `base`), a
sampler records its base's (`config.json` `base`) and its data's (`data_fingerprint`).
`check_base` compares a recorded base with the one given.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

HF_SAMPLES_PER_TENSOR = 256
_HF_LOAD_TIME_KEYS = ("transformers_version", "torch_dtype", "dtype")
OVERRIDE = "pass --allow-base-mismatch (allow_base_mismatch=True) if it is the same model re-saved"


def short(fingerprint: str | None) -> str:
    """The first 12 hex digits of a fingerprint (what messages show), or 'unrecorded'."""
    return fingerprint[:12] if fingerprint else "unrecorded"


def trajectories_fingerprint(shards: Iterable[dict]) -> str:
    """Fingerprint of a trajectory set: SHA-256 over its shards' (index, sha256) in index order."""
    lines = [f"{s['index']}:{s['sha256']}" for s in sorted(shards, key=lambda s: s["index"])]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def examples_fingerprint(examples: Iterable[Any], tokenizer_fingerprint: str | None) -> str:
    """Fingerprint of training examples (objects with `prompt` and `completion` id lists)."""
    h = hashlib.sha256(f"tokenizer:{tokenizer_fingerprint}\n".encode())
    for e in examples:
        h.update(json.dumps([e.prompt, e.completion], separators=(",", ":")).encode() + b"\n")
    return h.hexdigest()


@torch.no_grad()
def hf_weights_fingerprint(model: torch.nn.Module, per_tensor: int = HF_SAMPLES_PER_TENSOR) -> str:
    """Fingerprint of a Hugging Face model: its config and a strided sample of every parameter.

    Independent of the load dtype for checkpoints stored in a lower precision (the
    sampled values are hashed in fp32) and of where the model was loaded from.
    """
    config = getattr(model, "config", None)
    cfg = config.to_dict() if hasattr(config, "to_dict") else {}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in _HF_LOAD_TIME_KEYS}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    samples = []
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        n = flat.numel()
        idx = torch.arange(min(n, per_tensor), device=flat.device) * max(1, n // per_tensor)
        samples.append(flat[idx].float())
        h.update(f"{name}:{tuple(p.shape)};".encode())
    if samples:
        h.update(torch.cat(samples).cpu().numpy().tobytes())
    return h.hexdigest()


def _as_dict(base) -> dict:
    return asdict(base) if is_dataclass(base) else dict(base or {})


def check_base(recorded, given, what: str, allow_mismatch: bool = False) -> None:
    """Refuse a base model `given` that is not the `recorded` one (ValueError naming both).

    `recorded`, `given`: `BaseModelInfo`s or their dicts. Vocabulary, width and tokenizer
    must always agree; the weight fingerprints must agree unless `allow_mismatch` (a
    base re-saved in another format). Fields either side lacks (older files) are skipped.
    `what` starts the message: "sampler", "trajectories runs/traj", ...
    """
    r, g = _as_dict(recorded), _as_dict(given)
    rname, gname = r.get("name"), g.get("name")
    problems = [f"{k} {r[k]} vs base {g[k]}" for k in ("vocab_size", "hidden_size")
                if r.get(k) is not None and g.get(k) is not None and r[k] != g[k]]
    rt, gt = r.get("tokenizer_fingerprint"), g.get("tokenizer_fingerprint")
    if rt and gt and rt != gt:
        problems.append(f"tokenizer fingerprints differ ({short(rt)} vs {short(gt)})")
    if problems:
        raise ValueError(f"{what}: made for base {rname!r}, not for {gname!r}: " + "; ".join(problems))
    rf, gf = r.get("fingerprint"), g.get("fingerprint")
    if rf and gf and rf != gf and not allow_mismatch:
        raise ValueError(
            f"{what}: made for base {rname!r} with weights {short(rf)}, but the base given is {gname!r} with "
            f"weights {short(gf)}: another model of the same shape; use the base it was made for, or {OVERRIDE}"
        )


def stamp_shipped(assets: Path) -> list[Path]:
    """Record fingerprints in shipped checkpoints saved before they existed (`make fingerprint-assets`).

    Each `models/*` and `judges/*` config.json gets its weights' `weights_sha256`; each
    `samplers/NAME` gets its own and, as its base's fingerprint, that of `models/NAME`:
    the shipped samplers were trained on those very weights (docs/training.md), which
    `check_base` confirms by vocabulary, width and tokenizer before anything is written.
    Their trajectory sets were not kept, so `data_fingerprint` stays unrecorded. Running
    it again changes nothing. Returns the config files it rewrote.
    """
    from adjust.fileio import file_sha256, write_text

    changed = []

    def stamp(folder: Path, base: dict | None = None) -> None:
        path = folder / "config.json"
        cfg = json.loads(path.read_text())
        new = {**cfg, "weights_sha256": file_sha256(folder / "model.safetensors")}
        if base is not None:
            check_base(cfg["base"], base, f"shipped sampler {folder.name}")
            new["base"] = {**cfg["base"], "fingerprint": base["fingerprint"]}
        if new != cfg:
            write_text(path, json.dumps(new, indent=2) + "\n")
            changed.append(path)

    for kind in ("models", "judges"):
        for folder in sorted((assets / kind).glob("*/")):
            stamp(folder)
    for folder in sorted((assets / "samplers").glob("*/")):
        base_cfg = json.loads((assets / "models" / folder.name / "config.json").read_text())
        stamp(folder, {"name": base_cfg["name"], "vocab_size": base_cfg["vocab_size"],
                       "hidden_size": base_cfg["hidden_size"], "tokenizer_fingerprint": base_cfg["tokenizer_fingerprint"],
                       "fingerprint": base_cfg["weights_sha256"]})
    return changed

