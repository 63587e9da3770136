"""Hub-style checkpoint folders, shared by the base model, the sampler and the judge.

A folder holds `config.json` (its `architecture` names the class, `weights_sha256`
the SHA-256 of the weights) and `model.safetensors`. Both are written to temp files
first and renamed together, so a crash leaves the old pair or the new one. Loading
verifies the weights against the recorded hash (adjust.identity) and names the file on
every failure. A bare name resolves to a checkpoint shipped in `adjust/assets/<kind>/`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load, save_file

from adjust.fileio import atomic_write_all, file_sha256, make_dirs

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


def save_checkpoint(path: str | Path, module: torch.nn.Module, architecture: str, config: dict) -> str:
    """Write `module`'s weights and `{"architecture": ..., **config, "weights_sha256": ...}` to the folder `path`.

    Returns the weights' SHA-256 (the checkpoint's fingerprint).
    """
    path = Path(path)
    make_dirs(path)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    digest: list[str] = []

    def weights(f: Path) -> None:
        save_file(state, str(f))
        digest.append(file_sha256(f))

    def config_file(f: Path) -> None:
        f.write_text(json.dumps({"architecture": architecture, **config, "weights_sha256": digest[0]}, indent=2) + "\n")

    atomic_write_all([(path / WEIGHTS_NAME, weights), (path / CONFIG_NAME, config_file)])
    return digest[0]


def load_config(path: Path, architecture: str) -> dict:
    """The folder's config without its `architecture` and `weights_sha256` entries (`architecture` must match)."""
    try:
        raw = json.loads((path / CONFIG_NAME).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / CONFIG_NAME}: not valid JSON ({e.msg}); the checkpoint is damaged") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path / CONFIG_NAME}: expected a JSON object, got {type(raw).__name__}")
    arch = raw.pop("architecture", None)
    if arch != architecture:
        raise ValueError(f"{path / CONFIG_NAME}: architecture {arch!r} is not a {architecture} checkpoint")
    raw.pop("weights_sha256", None)
    return raw


def load_weights(module: torch.nn.Module, path: Path) -> str:
    """Load the folder's `model.safetensors` into `module` (strict) and return its SHA-256.

    The hash is checked against the `weights_sha256` its config.json records, if any.
    """
    wfile = path / WEIGHTS_NAME
    if not wfile.is_file():
        raise FileNotFoundError(f"missing weights file {wfile}")
    data = wfile.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        recorded = json.loads((path / CONFIG_NAME).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != digest:
        raise ValueError(f"{wfile}: checksum mismatch (sha256 {digest[:12]}, {CONFIG_NAME} records {recorded[:12]}): "
                         "the file was modified or damaged")
    try:
        state = load(data)
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise ValueError(f"cannot read weights {wfile}: {e}") from e
    try:
        module.load_state_dict(state)
    except RuntimeError as e:  # shapes that contradict config.json
        raise ValueError(f"{wfile}: does not fit {CONFIG_NAME}: {str(e).splitlines()[-1].strip()}") from None
    return digest


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float64": torch.float64, "fp64": torch.float64, "double": torch.float64}


def device_and_dtype(device, dtype) -> tuple[torch.device, torch.dtype | None]:
    """Check a `device` / `dtype` argument (objects or strings such as "cuda:0", "bf16") and return both as torch types."""
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in _DTYPES:
            raise ValueError(f"dtype: {dtype!r} is not a floating dtype (one of {', '.join(sorted(_DTYPES))})")
        dtype = _DTYPES[dtype.removeprefix("torch.")]
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype: {dtype!r} is not a floating torch dtype")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} but there are only {torch.cuda.device_count()} CUDA devices")
    elif dev.type not in ("cpu", "mps", "meta") or (dev.type == "mps" and not torch.backends.mps.is_available()):
        raise ValueError(f"device: {device!r} is not available here")
    return dev, dtype
