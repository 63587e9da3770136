"""`adjust info PATH`: what a checkpoint or data folder is, what it is for, how it was made.

Reads only metadata (config.json, safetensors headers, manifests, the last log
line), so it is instant even for large checkpoints and never changes a file.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from adjust.checkpoint import ASSETS, CONFIG_NAME, WEIGHTS_NAME
from adjust.identity import trajectories_fingerprint
from adjust.jobstate import status_line
from adjust.train.checkpointing import STATE_NAME
from adjust.train.trajectories import MANIFEST

_PURPOSE = {
    "MaskedDiffusionLM": "base model: adjust generate/eval --model|--base PATH",
    "AdjustSampler": "ADJUST sampler: adjust generate --sampler PATH (with the base it names)",
    "Judge": "autoregressive judge LM of the text metrics (judge_nll)",
}


def _parameters(weights: Path) -> int:
    with safe_open(str(weights), framework="pt") as f:
        total = 0
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    return total


def _last_log(folder: Path) -> dict | None:
    log = folder / "train_log.jsonl"
    if not log.is_file():
        return None
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else None


def _checkpoint(folder: Path) -> dict:
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    kind = cfg.get("architecture", "unknown")
    rec = {"path": str(folder), "kind": kind, "purpose": _PURPOSE.get(kind, "unknown checkpoint type")}
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        rec["parameters"] = _parameters(weights)
        rec["bytes"] = weights.stat().st_size
    else:
        rec["weights"] = "missing model.safetensors"
    rec["fingerprint"] = cfg.get("weights_sha256", "unrecorded")
    if kind == "AdjustSampler":
        rec["for_base"] = cfg.get("base", {})
        rec["data_fingerprint"] = cfg.get("data_fingerprint") or "unrecorded"
        rec["layer"] = cfg.get("layer_config", {})
        rec["inputs"] = cfg.get("inputs", "all")  # the tokens g embeds (adjust.sampler)
        rec["positions"] = cfg.get("positions", 0)  # frequencies of g's absolute-position input (0: none)
    else:
        keys = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                "max_seq_len", "tokenizer_fingerprint")
        rec["config"] = {k: cfg[k] for k in keys if k in cfg}
    extra = dict(cfg.get("extra", {}))
    if "command" in extra:
        rec["made_by"] = extra.pop("command")
    if kind == "AdjustSampler":
        rec["readiness"] = _readiness(extra.pop("readiness", None))
        race = extra.pop("inputs_race", None)
        if race is not None:  # adjust.train.inputs_race
            kl = race["heldout_kl"]
            rec["inputs"] += (f" (--sampler-inputs auto: held-out KL at step {race['step']} all {kl['all']:.4f}, "
                              f"new {kl['new']:.4f})")
    rec["extra"] = extra
    status = status_line(folder)
    if status is not None:
        rec["status"] = status
    elif (folder / STATE_NAME).is_file():  # written before job.json existed
        rec["status"] = f"{STATE_NAME} present: re-running the training command continues it"
    last = _last_log(folder)
    if last is not None:
        rec["last_log"] = last
    return rec


def _readiness(readout: dict | None) -> dict | str:
    """The sampler's last readiness readout (adjust.train.readiness) in a readable form."""
    if readout is None:
        return "not measured (no readout in this checkpoint; see docs/training.md)"
    out = {"verdict": f"{readout['verdict']} at step {readout['step']}", "why": readout["why"]}
    for key, val in readout.items():
        if key.startswith("K") and isinstance(val, dict):
            line = f"joint KL {val['adjust_kl']:.4f} vs parallel {val['parallel_kl']:.4f}: {100 * val['closed']:.0f}% closed"
            metric = next((k for k in val if k.endswith("_closed") and k != "closed"), None)
            if metric is not None and val[metric] is not None:
                name = metric.removesuffix("_closed")
                se = val.get(metric + "_se")
                line += f"; {name} {val['adjust_' + name]:.3f} (parallel {val['parallel_' + name]:.3f}, " \
                        f"K=1 {readout['exact_' + name]:.3f}): {100 * val[metric]:.0f}% of the gap closed" + \
                        ("" if se is None else f" (± {100 * se:.1f})")
            out[f"at {key[:1]}={key[1:]}"] = line
    return out


def _trajectories(folder: Path) -> dict:
    manifests = sorted(folder.glob("manifest*.json"))
    first = json.loads(manifests[0].read_text())
    shards = {s["index"]: s for m in manifests for s in json.loads(m.read_text())["shards"]}
    settings = first["settings"]
    rows = sum(s["rows"] for s in shards.values())
    rec = {"path": str(folder), "kind": "trajectories",
           "purpose": "K=1 trajectories: adjust train-sampler --data PATH",
           "base": first["base"], "settings": settings, "shards": len(shards), "sequences": rows,
           "complete": rows == settings["num_sequences"] and (folder / MANIFEST).is_file()}
    if rec["complete"]:
        rec["fingerprint"] = trajectories_fingerprint(shards.values())
    status = status_line(folder)
    if status is not None:
        rec["status"] = status
    return rec


def describe(path: str | Path) -> list[dict]:
    """One record per thing `path` names: a folder, or a shipped name (a model and its sampler share one)."""
    folder = Path(path)
    if folder.is_dir():
        if (folder / CONFIG_NAME).is_file():
            return [_checkpoint(folder)]
        if any(folder.glob("manifest*.json")):
            return [_trajectories(folder)]
        raise ValueError(f"{folder}: neither a checkpoint (config.json) nor a trajectory folder (manifest.json)")
    shipped = [ASSETS / kind / str(path) for kind in ("models", "samplers", "judges")]
    found = [_checkpoint(d) for d in shipped if (d / CONFIG_NAME).is_file()]
    if not found:
        raise FileNotFoundError(f"{path}: no such folder and no shipped model, sampler or judge of that name")
    return found


def format_info(rec: dict, indent: str = "") -> str:
    """Human-readable lines of a `describe` record."""
    lines = []
    for key, val in rec.items():
        if isinstance(val, dict):
            lines.append(f"{indent}{key}:")
            lines.append(format_info(val, indent + "  "))
        elif key == "parameters":
            lines.append(f"{indent}{key}: {val / 1e6:.3f}M")
        else:
            lines.append(f"{indent}{key}: {val}")
    return "\n".join(line for line in lines if line)
