"""Balanced brackets of several types (testbed ``"dyck"``).

A string is a uniformly random Dyck word of ``gen_length`` brackets with ``n_types``
bracket pairs ``( ) [ ] { } < >``: uniform over the shapes (each of the Catalan-many
balanced open/close patterns equally likely) and over the type of each pair. Every
closing bracket must match the type of the opening bracket it closes, wherever that
is, and the number of opens and closes must agree — nested, long-range and counting
constraints at once. Sampled exactly by drawing each bracket with the number of
balanced completions as its weight. Unconditional (BOS-only prompt), no EOS.
Every valid string has the same probability ``1 / (Catalan(L/2) · n_types^(L/2))``.
"""

from __future__ import annotations

import math
from functools import cache

from adjust.data.testbed import Example, Prompt, StableRandom
from adjust.data.tokenizer import SPECIAL_TOKENS, word_tokenizer

PAIRS: tuple[tuple[str, str], ...] = (("(", ")"), ("[", "]"), ("{", "}"), ("<", ">"))
SYMBOL_OFFSET = len(SPECIAL_TOKENS)


@cache
def _completions(depth: int, remaining: int) -> int:
    """Open/close patterns of `remaining` brackets that close `depth` open ones and never go below 0."""
    if depth < 0 or depth > remaining:
        return 0
    if remaining == 0:
        return 1
    return _completions(depth + 1, remaining - 1) + _completions(depth - 1, remaining - 1)


class DyckLanguage:
    """Testbed ``"dyck"``: uniform balanced bracket strings of ``gen_length`` tokens.

    Token ids: ``SYMBOL_OFFSET + 2k`` opens type k, ``SYMBOL_OFFSET + 2k + 1`` closes it.
    ``score()`` returns ``valid`` (1.0 when balanced with matching types) and ``nll``
    (exact, nats per token; inf when invalid).
    """

    name = "dyck"

    def __init__(self, gen_length: int = 16, n_types: int = 3) -> None:
        if gen_length < 2 or gen_length % 2:
            raise ValueError(f"gen_length must be an even number ≥ 2, got {gen_length}")
        if not 1 <= n_types <= len(PAIRS):
            raise ValueError(f"n_types must be in 1..{len(PAIRS)}, got {n_types}")
        self.gen_length = gen_length
        self.n_types = n_types
        self.tokenizer = word_tokenizer([b for pair in PAIRS[:n_types] for b in pair])
        pairs = gen_length // 2
        self._nll = (math.log(_completions(0, gen_length)) + pairs * math.log(n_types)) / gen_length

    def sample(self, n: int, seed: int) -> list[list[int]]:
        """``n`` balanced strings as token-id lists."""
        rng = StableRandom(seed)
        L = self.gen_length
        rows = []
        for _ in range(n):
            stack: list[int] = []
            row = []
            for i in range(L):
                left = L - i - 1
                opens = _completions(len(stack) + 1, left)
                closes = _completions(len(stack) - 1, left) if stack else 0
                if rng.below(opens + closes) < opens:
                    k = rng.below(self.n_types)
                    stack.append(k)
                    row.append(SYMBOL_OFFSET + 2 * k)
                else:
                    row.append(SYMBOL_OFFSET + 2 * stack.pop() + 1)
            rows.append(row)
        return rows

    def is_valid(self, ids: list[int]) -> bool:
        """Balanced, with every close matching the type of the open it closes."""
        if len(ids) != self.gen_length:
            return False
        stack: list[int] = []
        for t in ids:
            k, is_close = divmod(t - SYMBOL_OFFSET, 2)
            if not 0 <= k < self.n_types or t < SYMBOL_OFFSET:
                return False
            if not is_close:
                stack.append(k)
            elif not stack or stack.pop() != k:
                return False
        return not stack

    def examples(self, n: int, seed: int) -> list[Example]:
        """``n`` unconditional examples: empty prompt, one balanced string each."""
        return [Example(prompt=[], completion=row) for row in self.sample(n, seed)]

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` empty (BOS-only) prompts."""
        return [Prompt(ids=[], meta={"testbed": self.name}) for _ in range(n)]

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """Exact validity and NLL of ``completion``."""
        valid = self.is_valid(list(completion))
        return {"valid": float(valid), "nll": self._nll if valid else math.inf}
