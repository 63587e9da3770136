"""Testbed ``"text-long"``: the text corpus with a long prompt — continue a held-out window's first tokens.

An evaluation variant of ``"text"`` for what depends on the prompt's length (the base-model
block cache, `adjust.base_cache`): each prompt is the first ``prompt_length`` tokens of a
held-out window of ``prompt_length + gen_length`` tokens, and the model generates the rest.
The shipped text model was trained on unconditional 32-token windows under random masking, so
the default 24 + 8 split stays inside what it was trained on (positions 1–32 after BOS, any
subset unmasked). ``score`` gives ``match``: the share of the generated tokens equal to the
window's true continuation, position by position (0 … 1; no per-sample likelihood exists for
real text).
"""

from __future__ import annotations

from adjust.data.testbed import Example, Prompt, StableRandom
from adjust.data.text import TextCorpus


class TextContinuation(TextCorpus):
    """Prompts of ``prompt_length`` held-out tokens; completions of ``gen_length`` tokens (module docstring).

    Args:
        prompt_length: tokens of each window given as the prompt.
        gen_length: tokens generated after it.
        **kw: `TextCorpus`'s other arguments (tokenizer, vocab_size, heldout_fraction).
    """

    name = "text-long"

    def __init__(self, prompt_length: int = 24, gen_length: int = 8, **kw) -> None:
        if not isinstance(prompt_length, int) or prompt_length < 1:
            raise ValueError(f"prompt_length must be an int ≥ 1, got {prompt_length!r}")
        super().__init__(gen_length=prompt_length + gen_length, **kw)
        self.prompt_length, self.gen_length = prompt_length, gen_length

    def _windows(self, n: int, seed: int, split: str) -> list[list[int]]:
        ids, width = self.ids[split], self.prompt_length + self.gen_length
        rng = StableRandom(seed)
        return [ids[s : s + width].tolist() for s in (rng.below(len(ids) - width + 1) for _ in range(n))]

    def examples(self, n: int, seed: int, split: str = "train") -> list[Example]:
        """``n`` windows of ``split``: the first ``prompt_length`` tokens as the prompt, the rest as the completion."""
        P = self.prompt_length
        return [Example(prompt=w[:P], completion=w[P:]) for w in self._windows(n, seed, split)]

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` held-out prompts; ``meta["continuation"]`` holds each window's true last ``gen_length`` tokens."""
        P = self.prompt_length
        return [Prompt(ids=w[:P], meta={"testbed": self.name, "continuation": w[P:]})
                for w in self._windows(n, seed, "heldout")]

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """``match``: the share of ``completion`` equal to the true continuation, position by position."""
        truth = prompt.meta["continuation"]
        return {"match": sum(int(a == b) for a, b in zip(completion, truth)) / len(truth)}
