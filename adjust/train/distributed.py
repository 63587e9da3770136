"""Data-parallel scale-out of `adjust data` and `adjust train-sampler` under torchrun.

`torchrun --nproc_per_node N -m adjust data|train-sampler ...` sets RANK/WORLD_SIZE
in each process's environment; `Rank.from_env()` then joins the process group (NCCL
on GPUs, gloo on CPU) and gives each process its device. Without torchrun the same
code runs as a world of one, with no process group at all.

- Trajectory generation splits the shard list: rank r makes shard i when
  i % world == r. Shard i always draws from seed + i and prompts lo..lo+rows, so the
  data are identical for every world size, and a run may resume with another one.
- Sampler training splits each global batch by rows: every rank draws the same
  batch from the same generator and keeps rows r, r + N, ...; the loss terms are
  normalised by the *global* masked-position counts and gradients are summed, so a
  step equals the single-process step on the whole batch. (The gradients are summed
  by hand in one flat buffer: DistributedDataParallel's hooks assume one forward
  per backward, and the unrolled sampler calls its layer R times per step.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    """This process's place in a data-parallel run (a world of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "Rank":
        """Join the torchrun process group named by RANK/WORLD_SIZE, or return a world of one."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce `t` in place (sum over ranks); a no-op in a world of one."""
        if self.distributed:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (e.g. a stop signal seen by one rank)."""
        if not self.distributed:
            return flag
        return bool(self.sum_(torch.tensor([int(flag)], device=self.device)).item())

    def sum_grads_(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over ranks in one flat all-reduce."""
        if not self.distributed:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:  # a rank whose rows had nothing masked has no graph to back-propagate
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.sum_(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
