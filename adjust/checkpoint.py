"""Hub-style checkpoint folders, shared by the base model, the sampler and the judge.

A folder holds `config.json` (its `architecture` names the class) and
`model.safetensors`; both are written to a temp file and renamed, so a crash leaves
the old file or the new one, never a torn one. Reading names the file on every
failure. A bare name resolves to a checkpoint shipped in `adjust/assets/<kind>/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ASSETS = Path(__file__).resolve().parent / "assets"
_NOUN = {"models": "model", "samplers": "sampler", "judges": "judge"}


def resolve(name_or_path: str | Path, kind: str) -> Path:
    """A checkpoint folder path, or the name of one shipped in `adjust/assets/<kind>/`."""
    p = Path(name_or_path)
    if (p / CONFIG_NAME).is_file():
        return p
    shipped = ASSETS / kind / str(name_or_path)
    if (shipped / CONFIG_NAME).is_file():
        return shipped
    root = ASSETS / kind
    known = sorted(d.name for d in root.iterdir() if (d / CONFIG_NAME).is_file()) if root.is_dir() else []
    raise FileNotFoundError(
        f"no {_NOUN[kind]} checkpoint at {str(name_or_path)!r}: expected a folder with {CONFIG_NAME} and "
        f"{WEIGHTS_NAME}, or a shipped {_NOUN[kind]} name ({', '.join(known) or 'none shipped'})"
    )


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def save_checkpoint(path: str | Path, module: torch.nn.Module, architecture: str, config: dict) -> Path:
    """Write `module`'s weights and `{"architecture": ..., **config}` to the folder `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    _atomic_write(path / WEIGHTS_NAME, lambda f: save_file(state, str(f)))
    text = json.dumps({"architecture": architecture, **config}, indent=2) + "\n"
    _atomic_write(path / CONFIG_NAME, lambda f: f.write_text(text))
    return path


def load_config(path: Path, architecture: str) -> dict:
    """The folder's config without its `architecture` tag, which must be `architecture`."""
    try:
        raw = json.loads((path / CONFIG_NAME).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / CONFIG_NAME}: not valid JSON ({e.msg}); the checkpoint is damaged") from None
    arch = raw.pop("architecture", None)
    if arch != architecture:
        raise ValueError(f"{path / CONFIG_NAME}: architecture {arch!r} is not a {architecture} checkpoint")
    return raw


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load the folder's `model.safetensors` into `module` (strict)."""
    wfile = path / WEIGHTS_NAME
    if not wfile.is_file():
        raise FileNotFoundError(f"missing weights file {wfile}")
    try:
        state = load_file(str(wfile))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise ValueError(f"cannot read weights {wfile}: {e}") from e
    module.load_state_dict(state)
