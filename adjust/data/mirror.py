"""Palindromes: a later block that must mirror an earlier one (testbed ``"mirror"``).

A string is ``gen_length / 2`` symbols drawn uniformly from ``n_symbols`` word tokens
``"s0" .. "s{n-1}"`` followed by the same symbols in reverse order. Every position is
tied to exactly one other position far away (position i to ``L - 1 - i``), so the
marginal at every masked position is uniform while the joint is a point mass once its
partner is known: sampling two tied positions from one forward's marginals matches
them with probability ``1 / n_symbols``. Unconditional (BOS-only prompt), no EOS.
The exact likelihood is known: every valid string has probability ``n_symbols^(-L/2)``.
"""

from __future__ import annotations

import math

from adjust.data.testbed import Example, Prompt, StableRandom
from adjust.data.tokenizer import SPECIAL_TOKENS, word_tokenizer

SYMBOL_OFFSET = len(SPECIAL_TOKENS)  # token id of symbol k is k + SYMBOL_OFFSET


class MirrorLanguage:
    """Testbed ``"mirror"``: uniform palindromes of ``gen_length`` symbols.

    ``score()`` returns ``valid`` (1.0 for a palindrome of symbols) and ``nll``
    (exact, nats per token; inf when invalid).
    """

    name = "mirror"

    def __init__(self, gen_length: int = 16, n_symbols: int = 32) -> None:
        if gen_length < 2 or gen_length % 2:
            raise ValueError(f"gen_length must be an even number ≥ 2, got {gen_length}")
        if n_symbols < 2:
            raise ValueError(f"n_symbols must be ≥ 2, got {n_symbols}")
        self.gen_length = gen_length
        self.n_symbols = n_symbols
        self.tokenizer = word_tokenizer([f"s{i}" for i in range(n_symbols)])

    def sample(self, n: int, seed: int) -> list[list[int]]:
        """``n`` palindromes as token-id lists."""
        rng = StableRandom(seed)
        half = self.gen_length // 2
        rows = []
        for _ in range(n):
            first = [SYMBOL_OFFSET + rng.below(self.n_symbols) for _ in range(half)]
            rows.append(first + first[::-1])
        return rows

    def examples(self, n: int, seed: int) -> list[Example]:
        """``n`` unconditional examples: empty prompt, one palindrome each."""
        return [Example(prompt=[], completion=row) for row in self.sample(n, seed)]

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` empty (BOS-only) prompts."""
        return [Prompt(ids=[], meta={"testbed": self.name}) for _ in range(n)]

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """Exact validity and NLL of ``completion``."""
        ids = list(completion)
        symbols = all(SYMBOL_OFFSET <= t < SYMBOL_OFFSET + self.n_symbols for t in ids)
        valid = symbols and len(ids) == self.gen_length and ids == ids[::-1]
        nll = 0.5 * math.log(self.n_symbols) if valid else math.inf
        return {"valid": float(valid), "nll": nll}
