"""Learning-rate schedule shared by the trainers."""

import math


def warmup_cosine(step: int, steps: int, warmup: int, lr: float, floor: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `lr` to `floor · lr`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
