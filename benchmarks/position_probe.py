"""`benchmarks.recipe_sweep` with absolute positions added to the sampler's input (a probe).

    python -m benchmarks.position_probe --base runs/base-mirror --data runs/traj-mirror \
        --name full-mirror-all-pos-b2 --cfg '{"sampler_inputs": "all"}' --n 334 --seeds 3 --threads 1

Asks whether g's misses on mirror come from its attention knowing only relative positions
(docs/training.md, "The re-made mirror base"): copying a token to its mirror position 15 − i needs
a query that knows its own position i, which a RoPE layer reads only from what the base's h says
about it. Here g's layer input gets one more term, u += P · [sin(ω_f p), cos(ω_f p)]_f, with p the
position counted from the first non-pad token (the positions RoPE uses), `FREQUENCIES` periods
geometric from 3 to 300 tokens, and P a learned [d, 2F] projection that starts at 0 (a fresh g is
still naive parallel, and still moves nothing until its output gate does). Only the CPU torch path
of full rows is covered (`forward`, `forward_rows`: no KV caches, no kernels), which is all that
training, the readout and the sweep's measurement use. Every argument is recipe_sweep's. Not a
product option.
"""

from __future__ import annotations

import math
import runpy
import sys

import torch
from torch import nn

FREQUENCIES = 16


def _features(pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[..., 2F] sinusoids of the positions ``pos`` [...]."""
    periods = 3.0 * 100.0 ** (torch.arange(FREQUENCIES, device=pos.device, dtype=torch.float32) / (FREQUENCIES - 1))
    angle = pos[..., None].float() * (2 * math.pi / periods)
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(dtype)


def _add_positions() -> None:
    """Patch `AdjustSampler` so that every sampler made in this process adds absolute positions to its input."""
    import adjust.sampler as sampler_module
    from adjust.context_cache import candidate_slots
    from adjust.models.layers import position_ids_from_mask

    cls = sampler_module.AdjustSampler
    plain_init = cls.__init__

    def __init__(self, layer_config, *args, **kwargs):
        plain_init(self, layer_config, *args, **kwargs)
        self.pos_proj = nn.Linear(2 * FREQUENCIES, layer_config.hidden_size, bias=False)
        nn.init.zeros_(self.pos_proj.weight)

    def positioned_input(self, h, x, adapter, attention_mask):
        pos = (torch.arange(x.shape[1], device=x.device).expand_as(x) if attention_mask is None
               else position_ids_from_mask(attention_mask))
        return self.layer_input(h, x, adapter) + self.pos_proj(_features(pos, h.dtype))

    def forward(self, h, x, adapter, attention_mask=None, kv_cache=None, layer_idx=0):
        if kv_cache is not None:
            raise NotImplementedError("the position probe has no KV cache")
        u = positioned_input(self, h, x, adapter, attention_mask)
        cos, sin, key_mask = self.positions(x, attention_mask, u.dtype)
        return h + self.norm_out(self.layer(u, cos, sin, key_mask))

    def forward_rows(self, h, x, adapter, attention_mask, rows, kv_cache=None, layer_idx=0):
        if kv_cache is not None:
            raise NotImplementedError("the position probe has no KV cache")
        idx, valid = candidate_slots(rows)
        u = positioned_input(self, h, x, adapter, attention_mask)
        cos, sin, key_mask = self.positions(x, attention_mask, u.dtype)
        at = idx[..., None].expand(-1, -1, h.shape[-1])
        hc = h.gather(1, at)
        new = hc + self.norm_out(self.layer.forward_at(u, cos, sin, key_mask, idx))
        return h.scatter(1, at, torch.where(valid[..., None], new, hc))

    def forward_window(self, *args, **kwargs):
        raise NotImplementedError("the position probe has no block cache")

    cls.__init__, cls.forward, cls.forward_rows, cls.forward_window = __init__, forward, forward_rows, forward_window


def main() -> None:
    _add_positions()
    sys.argv[0] = "benchmarks.recipe_sweep"
    runpy.run_module("benchmarks.recipe_sweep", run_name="__main__")


if __name__ == "__main__":
    main()
