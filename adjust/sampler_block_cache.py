"""The base cache's rule applied to the sampler: g's keys/values outside the window, kept per pass.

With ``base_cache`` (`adjust.base_cache`), a block's later base forwards recompute only a window of
rows and read every other position's keys/values from the block's first (full) forward. ADJUST's
sampler g is one more decoder layer on top of the base, run K − 1 times per base step; the same rule
is applied to it, each pass k being its own cached layer:

- at a **refresh step** (the block's first, or every step with ``base_cache_refresh="forward"``) g
  runs over every row, as without a cache, and pass k's keys/values of every row are recorded;
- at the block's **later steps** pass k runs on the window rows only (their queries, keys, values,
  attention and MLP), the other positions' keys/values read from pass k's record; the step's last
  pass, read only at its candidates, computes their rows alone past the window's keys/values. The
  rows outside the window come back unchanged; nothing reads them (candidates lie in the block,
  inside the window).

**What it changes, and what it does not.** Outside the window the base's hidden states are those of
the block's full forward and the tokens do not change during a block, so pass 1's recorded
keys/values there are exactly what g would compute again: **pass 1 — all of ADJUST at K = 2 — is
unchanged by this cache** (up to rounding: the window's rows go through smaller GEMMs). From pass 2
on, exact g would also see the outside rows' own updates (attention mixes the step's commits into
every row); the record holds them as of the block's refresh step — the same staleness the base's
cached positions have. Refreshing every forward therefore still gives the uncached tokens (tested).
A pass index the refresh step did not reach (an adaptive policy that stopped early there) is run
over every row the first time a later step needs it, with the outside rows as they are, and recorded.

Cost per later step: every pass on W window rows (W = the block, plus the suffix with the prefix
cache) with L keys, instead of L rows; the last one projects the W rows and runs only the C candidate
rows further (`benchmarks.floors`: ``window_pass_cost``).
"""

from __future__ import annotations

import torch

from adjust.models.adapter import DiffusionLMAdapter
from adjust.models.kv_cache import BlockKVCache


class SamplerBlockCache:
    """g's per-pass keys/values for one generation's blocks (the eager loop's; module docstring)."""

    def __init__(self, sampler, adapter: DiffusionLMAdapter) -> None:
        self.sampler, self.adapter = sampler, adapter
        self.kv: BlockKVCache | None = None
        self.window: tuple[int, int] | None = None

    def start_step(self, window: tuple[int, int] | None) -> None:
        """Before a base step's passes: ``window`` is the base forward's recomputed rows [start, end),
        or None when it was a full forward (a refresh step: the record starts again)."""
        self.window = window
        if window is None:
            self.kv = None

    def __call__(self, h: torch.Tensor, x: torch.Tensor, attention_mask: torch.Tensor | None, k: int,
                 final_rows: torch.Tensor | None) -> torch.Tensor:
        """Sampler pass ``k`` (1-based) of this step on h [B, L, d] with tokens x [B, L]; ``final_rows``
        [B, L] bool: the step's candidates when this is its last pass (only their rows are read after it)."""
        s, layer_idx = self.sampler, k - 1
        if self.kv is None:
            self.kv = BlockKVCache()
        if self.window is not None and layer_idx < len(self.kv.keys):
            return s.forward_window(h, x, self.adapter, attention_mask, self.kv, layer_idx, *self.window, final_rows)
        if layer_idx != len(self.kv.keys):
            raise RuntimeError(f"sampler pass {k} run before pass {len(self.kv.keys) + 1} was recorded")
        self.kv.record()
        if final_rows is not None:
            return s.forward_rows(h, x, self.adapter, attention_mask, final_rows, self.kv, layer_idx)
        return s.forward(h, x, self.adapter, attention_mask, self.kv, layer_idx)
