"""The base-model block cache: Fast-dLLM's prefix and dual KV cache for semi-autoregressive generation.

``generate(..., block_length=b, base_cache="prefix" | "dual")``. Every semi-AR block starts with
one **full** base forward, which is also that block's first decoding step and records every
layer's keys/values (`adjust.models.kv_cache.BlockKVCache`). The block's later forwards
recompute only a window of rows and read every other position's keys/values from the cache:

- ``"prefix"``: the window is the block *and everything after it*; the cached positions are the
  prompt and the finished blocks (NVlabs/Fast-dLLM ``generate_with_prefix_cache``: the forward
  over ``x[:, block_start:]`` with the prefix's keys/values);
- ``"dual"``: the window is the block alone; the masked suffix after it is cached too
  (``generate_with_dual_cache``: the forward over ``x[:, block_start:block_end]`` with the
  block's keys/values replaced in the cache of the whole sequence).

**Refresh rule** (Fast-dLLM's): the cache is rebuilt at the start of every block, by that block's
full forward, so it holds the keys/values of the sequence as it was then: the previous block's
final tokens included, and the current block still fully masked.

**An approximation.** Attention is bidirectional, so the cached positions' keys/values would
change as the block's tokens are committed (every position attends to the block); reusing them
for the rest of the block ignores that change. ``base_cache_refresh="forward"`` rebuilds the cache
with a full forward before every windowed forward — twice the work, no speed-up — and then gives
the uncached tokens exactly (at T = 0; tested on every adapter): the check that the windowed path
is right, and that everything the default loses is the staleness above.

**What the sampler sees.** A windowed forward gives fresh hidden states only in the window. The
ADJUST sampler (and every policy) receives the whole [B, L, d]: the window's fresh rows, and for
the other positions the hidden states of the block's full forward (as stale as their cached
keys/values). Candidates are always inside the block, so the rows whose logits are read are fresh.
The sampler's own passes follow the same rule, each pass as one more cached layer
(`adjust.sampler_block_cache`; ``window`` below tells them which rows are fresh).

Each adapter decides which rows it recomputes for a window (``hidden_window``): Dream also
recomputes the row before the block, since its logits at i come from its output at i − 1.
Infilling (mask tokens inside the prompt) is refused: those positions would be candidates that
lie in the cached prefix.
"""

from __future__ import annotations

import torch

from adjust.models.adapter import DiffusionLMAdapter

BASE_CACHES = ("prefix", "dual")
REFRESH = ("block", "forward")


def check_base_cache(base_cache, refresh, block_length: int | None, adapter: DiffusionLMAdapter,
                     prompt_has_masks: bool) -> None:
    """Raise ValueError / TypeError for a base-cache setting `generate` cannot run."""
    if base_cache is not None and base_cache not in BASE_CACHES:
        raise ValueError(f"base_cache must be None or one of {BASE_CACHES}, got {base_cache!r}")
    if refresh not in REFRESH:
        raise ValueError(f"base_cache_refresh must be one of {REFRESH}, got {refresh!r}")
    if base_cache is None:
        if refresh != "block":
            raise ValueError(f"base_cache_refresh={refresh!r} refreshes a base cache: set base_cache='prefix' or 'dual'")
        return
    if block_length is None:
        raise ValueError(f"base_cache={base_cache!r} caches per semi-autoregressive block (Fast-dLLM): set "
                         "block_length (e.g. 32)")
    if prompt_has_masks:
        raise ValueError(f"base_cache={base_cache!r}: the prompt holds mask tokens (infilling); they would be "
                         "generated inside the cached prefix (use base_cache=None)")
    if not adapter.supports_base_cache:
        raise ValueError(f"base_cache={base_cache!r}: {type(adapter).__name__} has no cached forward "
                         "(hidden_and_cache / hidden_window; use base_cache=None)")


class BaseForward:
    """The decoding loop's base forward: ``adapter.hidden`` uncached, or block-cached (module docstring).

    Attributes:
        cached_forwards: windowed forwards run so far (the others were full forwards).
    """

    def __init__(self, adapter: DiffusionLMAdapter, base_cache: str | None = None, refresh: str = "block") -> None:
        self.adapter, self.mode, self.refresh = adapter, base_cache, refresh
        self.cache = None
        self.h_block: torch.Tensor | None = None  # hidden states of the block's full forward
        self.cached_forwards = 0
        # the last forward's recomputed rows [start, end) when the other positions' keys/values are older
        # than it (a later step of a block); None when every position is fresh (no cache, a full forward,
        # or refresh="forward"). The sampler's passes follow it (adjust.sampler_block_cache).
        self.window: tuple[int, int] | None = None

    def __call__(self, x: torch.Tensor, attention_mask: torch.Tensor | None, block_start: int, block_end: int,
                 first_of_block: bool) -> torch.Tensor:
        """Hidden states [B, L, d] of ``x`` for a step of the block [block_start, block_end)."""
        self.window = None
        if self.mode is None:
            return self.adapter.hidden(x, attention_mask)
        if first_of_block or self.refresh == "forward":
            self.h_block, self.cache = self.adapter.hidden_and_cache(x, attention_mask)
            if first_of_block:
                return self.h_block
        end = x.shape[1] if self.mode == "prefix" else block_end
        if self.refresh == "block":
            self.window = (block_start, end)
        fresh = self.adapter.hidden_window(x, attention_mask, self.cache, block_start, end)
        self.cached_forwards += 1
        h = self.h_block
        return torch.cat([h[:, :block_start], fresh.to(h.dtype), h[:, end:]], dim=1)
