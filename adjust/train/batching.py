"""Lay out prompt/completion examples as model inputs: [BOS] + prompt + completion, right-padded."""

from __future__ import annotations

from typing import Sequence

import torch

from adjust.data.testbed import Example


def collate(
    examples: Sequence[Example], bos_id: int | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (input_ids, attention_mask, loss_mask), each [B, L].

    The loss mask covers the completion only (the prompt stays visible, as in
    LLaDA's SFT); right padding is masked out of attention and of the loss.
    """
    start = [bos_id] if bos_id is not None else []
    rows = [start + list(e.prompt) + list(e.completion) for e in examples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    loss = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, e) in enumerate(zip(rows, examples)):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
        loss[i, len(r) - len(e.completion) : len(r)] = True
    return ids, attn, loss
