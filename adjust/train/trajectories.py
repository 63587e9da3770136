"""K = 1 trajectories of the base model (paper Alg. 2, data side).

For each sequence we keep only what rebuilds every intermediate state: the final
tokens (left-padded prompt + completion), the attention mask, and the unmask
*rank* of each generated position (0 = first unmasked; -1 = never masked). State
t of a trajectory is the final sequence with every position of rank ≥ t masked.

Storage: shards `shard-00000.safetensors` of int tensors, written to a temp file and
renamed, plus `manifest.json` (settings, shard list with row counts and sha256).
Shard i is generated from seed `seed + i`, so an interrupted run resumes by
skipping the shards the manifest lists: no duplicates, nothing lost, same data.
Under torchrun, rank r makes the shards i ≡ r (mod world) and lists them in its own
`manifest.rank{r}.json`; rank 0 merges those into `manifest.json` at the end (and
any run merges what an interrupted one left), so the data do not depend on the
number of processes.

Identity (adjust.identity, adjust.jobstate): the manifest names the base that made the
shards, with its weight fingerprint, and a complete set records its own fingerprint;
a rerun with another base, other settings or other prompts is refused. A larger
`num_sequences` extends a complete set: the last, partly filled shard is remade at
full size, so the result equals a fresh run with the larger number.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from adjust.fileio import atomic_write, file_sha256, write_text
from adjust.generate import generate
from adjust.identity import check_base, trajectories_fingerprint
from adjust.jobstate import Job
from adjust.models.adapter import as_adapter
from adjust.progress import progress_bar
from adjust.train.checkpointing import GracefulStop
from adjust.train.distributed import Rank

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TrajectorySettings:
    """Generation settings of a trajectory set; stored in its manifest."""

    num_sequences: int
    gen_length: int
    shard_size: int = 256
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    alg: str = "entropy"
    block_length: int | None = None
    seed: int = 0


def unmask_ranks(commit_pass: torch.Tensor) -> torch.Tensor:
    """Per-row rank of each position's commit pass (-1 where never masked)."""
    big = torch.iinfo(torch.long).max
    keyed = torch.where(commit_pass < 0, big, commit_pass)
    ranks = keyed.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    return torch.where(commit_pass < 0, -1, ranks)


def _write_manifest(out: Path, manifest: dict, name: str = MANIFEST) -> None:
    write_text(out / name, json.dumps(manifest, indent=2) + "\n")


def _but_count(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "num_sequences"}


def _merged_manifest(out: Path, manifest: dict, allow_base_mismatch: bool = False) -> dict:
    """`manifest` with the shards listed by every manifest in `out` (whole or per-rank).

    Refuses manifests of other settings (the number of sequences aside) or another base.
    """
    shards = {}
    for f in sorted(out.glob("manifest*.json")):
        old = json.loads(f.read_text())
        if _but_count(old["settings"]) != _but_count(manifest["settings"]):
            raise ValueError(f"{out}: holds trajectories made with other settings; use a new --out")
        check_base(old["base"], manifest["base"], f"trajectories in {out}", allow_base_mismatch)
        shards.update({s["index"]: s for s in old["shards"]})
    return {**manifest, "shards": sorted(shards.values(), key=lambda s: s["index"])}


def _prompts_fingerprint(prompts: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(prompts, separators=(",", ":")).encode()).hexdigest()


def generate_trajectories(
    model,
    prompts: Sequence[Sequence[int]] | None,
    out_dir: str | Path,
    settings: TrajectorySettings,
    progress: bool = True,
    rank: Rank | None = None,
    allow_base_mismatch: bool = False,
) -> Path:
    """Run the base model with K = 1 and store trajectories in `out_dir` (resumable, extendable).

    `prompts`: prompt id lists (with BOS) cycled over the sequences, or None for
    BOS-only unconditional generation. `rank` (from `Rank.from_env()` under
    torchrun) gives this process its share of the shards; `out_dir` must then be
    on a filesystem every rank sees. Resuming with another base is refused unless
    `allow_base_mismatch` (the same base re-saved). SIGTERM/SIGINT stop after the
    current shard with `adjust.jobstate.JobInterrupted`.
    """
    rank = rank or Rank()
    if settings.num_sequences < 1 or settings.shard_size < 1 or settings.gen_length < 1:
        raise ValueError("num_sequences, shard_size and gen_length must be ≥ 1")
    adapter = as_adapter(model)
    out = Path(out_dir)
    base = adapter.info
    if prompts is None:
        bos = [adapter.bos_token_id] if adapter.bos_token_id is not None else []
        prompts = [bos]
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts: empty prompt list")
    manifest = {"settings": asdict(settings), "base": asdict(base), "shards": []}
    if out.is_dir():
        manifest = _merged_manifest(out, manifest, allow_base_mismatch)
    inputs = {"base": asdict(base), "settings": _but_count(asdict(settings)), "prompts": _prompts_fingerprint(prompts)}
    job = Job.begin(out, "data", inputs, settings.num_sequences, unit="sequence", total_flag="--n",
                    writer=rank.is_main, allow_base_mismatch=allow_base_mismatch)
    own = f"manifest.rank{rank.rank}.json" if rank.distributed else MANIFEST
    n_shards = -(-settings.num_sequences // settings.shard_size)

    def expected_rows(i: int) -> int:
        return min(settings.shard_size, settings.num_sequences - i * settings.shard_size)

    def kept(shards: list[dict]) -> list[dict]:  # a shard of another size (the last one of a set being extended) is remade
        return [s for s in shards if s["index"] < n_shards and s["rows"] == expected_rows(s["index"])]

    manifest["shards"] = kept(manifest["shards"])
    done = {s["index"] for s in manifest["shards"]}
    mine = [i for i in range(n_shards) if i % rank.world_size == rank.rank and i not in done]
    if len(done) < n_shards:  # a folder recorded complete whose shards were deleted since
        job.reopen(sum(s["rows"] for s in manifest["shards"]))
    desc = f"trajectories (rank 0 of {rank.world_size})" if rank.distributed else "trajectories"
    bar = progress_bar(total=settings.num_sequences, desc=desc, unit="seq", disable=not (progress and rank.is_main))
    bar.update(sum(s["rows"] for s in manifest["shards"]))
    t0, made = time.perf_counter(), 0
    with GracefulStop() as stop:
        for i in mine:
            lo = i * settings.shard_size
            rows = expected_rows(i)
            batch = [prompts[(lo + r) % len(prompts)] for r in range(rows)]
            res = generate(adapter, batch, K=1, max_new_tokens=settings.gen_length, temperature=settings.temperature,
                           top_p=settings.top_p, top_k=settings.top_k, alg=settings.alg,
                           block_length=settings.block_length, seed=settings.seed + i)
            tensors = {
                "input_ids": res.sequences.cpu().to(torch.int32),
                "attention_mask": res.attention_mask.cpu().to(torch.int8),
                "rank": unmask_ranks(res.commit_pass).cpu().to(torch.int32),
            }
            name = f"shard-{i:05d}.safetensors"
            atomic_write(out / name, lambda f: save_file(tensors, str(f)))
            manifest["shards"].append({"index": i, "file": name, "rows": rows, "sha256": file_sha256(out / name)})
            manifest["shards"].sort(key=lambda s: s["index"])
            _write_manifest(out, manifest, own)
            job.checkpoint(sum(s["rows"] for s in manifest["shards"]))
            made += rows
            bar.update(rows)
            bar.set_postfix(seq_per_s=f"{made / (time.perf_counter() - t0):.1f}")
            if stop.requested:
                break
    bar.close()
    rank.barrier()
    if rank.is_main and not job.already_complete:
        merged = _merged_manifest(out, manifest, allow_base_mismatch)
        merged["shards"] = kept(merged["shards"])
        rows_done = sum(s["rows"] for s in merged["shards"])
        if rows_done == settings.num_sequences:
            merged["fingerprint"] = trajectories_fingerprint(merged["shards"])
        _write_manifest(out, merged)
        for f in out.glob("manifest.rank*.json"):
            f.unlink()
        job.checkpoint(rows_done)
    rank.barrier()  # no rank returns before the merged manifest is on disk
    job.end(stop)
    return out


@dataclass
class Trajectories:
    """All trajectories of a folder, as padded tensors (rows may differ in width per shard)."""

    input_ids: list[torch.Tensor]  # one [T] tensor per sequence
    attention_mask: list[torch.Tensor]
    rank: list[torch.Tensor]
    settings: dict
    base: dict = field(default_factory=dict)  # the base model that made them (BaseModelInfo fields)
    fingerprint: str | None = None  # of the shard set (adjust.identity.trajectories_fingerprint)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_steps(self) -> torch.Tensor:
        """Unmasking steps of each trajectory (= its number of generated positions)."""
        if not hasattr(self, "_steps"):
            self._steps = torch.tensor([int(r.max()) + 1 for r in self.rank])
        return self._steps


def trajectory_prompt(traj: Trajectories, r: int, mask_id: int) -> list[int]:
    """The prompt that made row r: its real tokens before the generated region (masks kept for infilling)."""
    ids = torch.where(traj.rank[r] >= 0, mask_id, traj.input_ids[r])
    real = ids[traj.attention_mask[r].bool()]
    return real[: len(real) - traj.settings["gen_length"]].tolist()


def load_trajectories(path: str | Path, verify: bool = True) -> Trajectories:
    """Load every shard listed in the manifest (checking sizes/hashes when `verify`)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"{path}: no {MANIFEST} (not a trajectory folder, or generation never finished a shard)")
    manifest = json.loads((path / MANIFEST).read_text())
    ids, masks, ranks = [], [], []
    for s in manifest["shards"]:
        f = path / s["file"]
        if not f.is_file():
            raise FileNotFoundError(f"{f}: listed in the manifest but missing")
        if verify and file_sha256(f) != s["sha256"]:
            raise ValueError(f"{f}: checksum mismatch (truncated or modified shard); delete it and its manifest entry")
        t = load_file(str(f))
        for r in range(t["input_ids"].shape[0]):
            ids.append(t["input_ids"][r].long())
            masks.append(t["attention_mask"][r].long())
            ranks.append(t["rank"][r].long())
    if not ids:
        raise ValueError(f"{path}: the manifest lists no shards")
    rows = sum(s["rows"] for s in manifest["shards"])
    if rows != manifest["settings"]["num_sequences"]:
        raise ValueError(f"{path}: incomplete ({rows} of {manifest['settings']['num_sequences']} sequences); "
                         "rerun the `adjust data` command that made it to finish it")
    fingerprint = trajectories_fingerprint(manifest["shards"])
    if manifest.get("fingerprint", fingerprint) != fingerprint:
        raise ValueError(f"{path / MANIFEST}: its shard list does not match its recorded fingerprint (edited?)")
    return Trajectories(ids, masks, ranks, manifest["settings"], manifest.get("base", {}), fingerprint)
