"""`BlockKVCache`: every layer's keys/values of one full base forward, and the window recomputed later.

The base-model block cache (`adjust.base_cache`, Fast-dLLM's prefix and dual cache) runs one full
forward at the start of a semi-autoregressive block and keeps each layer's keys and values
([B, H_kv, L, D], after RoPE, before any GQA repeat). The block's later forwards recompute only a
*window* of rows [start, end): each layer projects the window's rows, writes their keys/values
into the cache at the window's positions and attends over the whole cached sequence.

One object serves every adapter through one call, ``update(keys, values, layer_idx)`` — the
signature of Hugging Face's ``Cache.update``, so a model whose attention already calls
``past_key_value.update(...)`` (Dream's) uses it unchanged:

- while recording (``window`` is None): the keys/values of the whole sequence are kept and
  returned as they are;
- with a window set: the window's keys/values overwrite those positions (the window is
  recomputed every forward, so what the cache held there is never read again) and the whole
  cached sequence is returned.
"""

from __future__ import annotations

import torch


class BlockKVCache:
    """Per-layer keys/values [B, H_kv, L, D] of a full forward; see the module docstring."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.window: tuple[int, int] | None = None  # None: recording a full forward

    @property
    def seq_len(self) -> int:
        """L, the length of the cached sequence (0 before a full forward was recorded)."""
        return self.keys[0].shape[2] if self.keys else 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Hugging Face's ``Cache.get_seq_length``: the cached length (models derive positions from it)."""
        return self.seq_len

    def set_window(self, start: int, end: int) -> None:
        """Recompute the rows [start, end) from now on; the other positions come from the cache."""
        if not self.keys:
            raise RuntimeError("BlockKVCache: no full forward recorded yet")
        if not 0 <= start < end <= self.seq_len:
            raise ValueError(f"BlockKVCache: window [{start}, {end}) is not inside the cached length {self.seq_len}")
        self.window = (start, end)

    def record(self) -> None:
        """Record (append) the next layers' full keys/values again, as before any window was set."""
        self.window = None

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int,
               cache_kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys/values attention runs over for layer ``layer_idx`` given this forward's (``keys``,
        ``values`` [B, H_kv, rows, D]): the whole sequence's."""
        if self.window is None:
            if layer_idx != len(self.keys):
                raise RuntimeError(f"BlockKVCache: layer {layer_idx} recorded out of order (have {len(self.keys)})")
            self.keys.append(keys)
            self.values.append(values)
            return keys, values
        start, end = self.window
        if keys.shape[2] != end - start:
            raise ValueError(f"BlockKVCache: {keys.shape[2]} rows given for the window [{start}, {end})")
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k[:, :, start:end] = keys
        v[:, :, start:end] = values
        return k, v
