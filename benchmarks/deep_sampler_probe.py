"""`benchmarks.recipe_sweep` with a sampler g of N decoder layers instead of the paper's one (a probe).

    python -m benchmarks.deep_sampler_probe 2 --base runs/base-dyck --data runs/traj-dyck \
        --name full-dyck-all-g2 --cfg '{"sampler_inputs": "all"}' --n 334 --seeds 3 --threads 1

Asks whether g's capacity is what limits the strongly coupled testbeds (docs/training.md, "The sweep"):
the sampler's one `DecoderLayer` is replaced, for this process only, by N of them in sequence, each
starting as a copy of the base's last layer (as the one layer does); the output gate still starts at 0,
so a fresh g is still naive parallel. Only the CPU torch path is covered (no KV caches, no kernels), which
is all that training, the readout and the sweep's measurement use. Every argument after N is
recipe_sweep's. Not a product option: the package's sampler has one layer.
"""

from __future__ import annotations

import runpy
import sys

from torch import nn


def _deepen(layers: int) -> None:
    """Patch `AdjustSampler` so that every sampler made in this process has `layers` decoder layers."""
    import adjust.sampler as sampler_module
    from adjust.models.layers import DecoderLayer

    class Stack(nn.Module):
        """`layers` decoder layers with the one layer's call signatures (no KV cache)."""

        def __init__(self, cfg) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(DecoderLayer(cfg) for _ in range(layers))

        def forward(self, x, cos, sin, key_mask, kv_cache=None, layer_idx=0):
            if kv_cache is not None:
                raise NotImplementedError("the probe's deeper g has no KV cache")
            for block in self.blocks:
                x = block(x, cos, sin, key_mask)
            return x

        def forward_at(self, x, cos, sin, key_mask, idx, kv_cache=None, layer_idx=0):
            if kv_cache is not None:
                raise NotImplementedError("the probe's deeper g has no KV cache")
            for block in self.blocks[:-1]:  # every row is a key of the next layer
                x = block(x, cos, sin, key_mask)
            return self.blocks[-1].forward_at(x, cos, sin, key_mask, idx)

        def load_state_dict(self, state, strict=True, assign=False):
            if not any(k.startswith("blocks.") for k in state):  # one layer's weights: into every block
                for block in self.blocks:
                    block.load_state_dict(state, strict, assign)
                return nn.modules.module._IncompatibleKeys([], [])
            return super().load_state_dict(state, strict, assign)

    cls = sampler_module.AdjustSampler
    one_layer_init = cls.__init__

    def __init__(self, layer_config, *args, **kwargs):
        one_layer_init(self, layer_config, *args, **kwargs)
        one = self.layer
        self.layer = Stack(layer_config)
        self.layer.load_state_dict(one.state_dict())  # each block as the one layer's initialisation

    cls.__init__ = __init__


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        raise SystemExit("usage: python -m benchmarks.deep_sampler_probe N <benchmarks.recipe_sweep arguments>")
    _deepen(int(sys.argv.pop(1)))
    sys.argv[0] = "benchmarks.recipe_sweep"
    runpy.run_module("benchmarks.recipe_sweep", run_name="__main__")


if __name__ == "__main__":
    main()
