"""A small real English corpus that is always available offline (testbed ``"text"``).

Source: the Python documentation topics shipped inside CPython as
``pydoc_data.topics`` (the text behind ``help("if")`` etc.; ~80 topics of the
Language Reference and Library Reference), © Python Software Foundation,
distributed under the PSF License Agreement (and the Zero-Clause BSD licence for
the documentation's code). It needs no download and no new dependency.

:func:`corpus_paragraphs` cleans it to prose: headings, tables, grammar rules,
code examples, interactive sessions and footnote markers are dropped, line breaks
inside a paragraph are joined, typographic quotes and dashes become ASCII, and
repeated paragraphs are kept once. That leaves ~1,200 paragraphs, ~250 KB. The
text depends on the running Python's version; :attr:`TextCorpus.corpus_fingerprint`
identifies it.

Paragraphs are split into train / held-out by a hash of their text (stable under
any reordering); the BPE tokenizer is trained on the train part only.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from adjust.data.testbed import Example, Prompt, StableRandom
from adjust.data.tokenizer import encode, load_tokenizer, train_bpe

_RULE = re.compile(r"[*=\-~^+#|]{3,}|\+[-=+]+\+|[-=]+( +[-=]+)+")  # heading underline, table border
_ITEM_MARK = re.compile(r"^(\*|\d+\.|\[\d+\])\s+")  # bullet, list number or footnote number
_ASCII = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."})


def _is_prose(p: str) -> bool:
    if len(p.split()) < 6 or p[-1] not in ".?!:" or not p.isascii():
        return False
    if "::=" in p or ">>>" in p or p.startswith("-["):  # grammar, doctest, footnote header
        return False
    # Code and tables are punctuation-heavy; prose is mostly letters and spaces.
    return sum(c.isalpha() or c == " " for c in p) >= 0.8 * len(p)


@cache
def corpus_paragraphs() -> tuple[str, ...]:
    """The cleaned prose paragraphs of ``pydoc_data.topics``, one line each, in topic order."""
    from pydoc_data.topics import topics

    out: dict[str, None] = {}
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            lines = [line.strip() for line in block.split("\n") if line.strip()]
            if not lines or any(_RULE.fullmatch(line) for line in lines):
                continue
            p = _ITEM_MARK.sub("", " ".join(lines)).translate(_ASCII)
            p = re.sub(r"\s+", " ", p)
            if _is_prose(p):
                out[p] = None
    return tuple(out)


def _is_heldout(paragraph: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(paragraph.encode("utf-8")).digest()[:8], "big")
    return h < fraction * 2**64


class TextCorpus:
    """Testbed ``"text"``: unconditional ``gen_length``-token windows of the cleaned corpus.

    Args:
        gen_length: tokens per example.
        vocab_size: size of the byte-level BPE trained on the train split when no
            ``tokenizer`` is given (training takes well under a second and is
            deterministic: the same settings give the same tokenizer JSON).
        tokenizer: a tokenizer, or the path of one, to use instead of training.
        heldout_fraction: share of paragraphs (by hash) in the held-out split.

    ``examples(..., split="heldout")`` draws from the held-out paragraphs (reference
    text for MAUVE and the like); ``prompts()`` are empty (BOS-only); ``score()``
    returns ``{}``: the metrics of this testbed compare sample sets, not single samples.
    """

    name = "text"

    def __init__(
        self,
        gen_length: int = 32,
        vocab_size: int = 1024,
        tokenizer: Tokenizer | str | Path | None = None,
        heldout_fraction: float = 0.1,
    ) -> None:
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.gen_length = gen_length
        paragraphs = corpus_paragraphs()
        self.corpus_fingerprint = hashlib.sha256("\n".join(paragraphs).encode("utf-8")).hexdigest()
        self.paragraphs: dict[str, list[str]] = {"train": [], "heldout": []}
        for p in paragraphs:
            self.paragraphs["heldout" if _is_heldout(p, heldout_fraction) else "train"].append(p)
        if tokenizer is None:
            tokenizer = train_bpe(self.paragraphs["train"], vocab_size)
        elif not isinstance(tokenizer, Tokenizer):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        # One token stream per split, paragraphs separated by newlines.
        self.ids = {k: np.array(encode(tokenizer, "\n".join(v)), dtype=np.int64) for k, v in self.paragraphs.items()}
        for split, ids in self.ids.items():
            if len(ids) < gen_length:
                raise ValueError(f"the {split} split has {len(ids)} tokens, fewer than gen_length={gen_length}")

    def examples(self, n: int, seed: int, split: str = "train") -> list[Example]:
        """``n`` windows of ``gen_length`` tokens at uniformly random offsets of ``split``."""
        ids = self.ids[split]
        rng = StableRandom(seed)
        starts = [rng.below(len(ids) - self.gen_length + 1) for _ in range(n)]
        return [Example(prompt=[], completion=ids[s : s + self.gen_length].tolist()) for s in starts]

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` empty (BOS-only) prompts; ``seed`` is unused since they are all alike."""
        return [Prompt(ids=[], meta={"testbed": self.name}) for _ in range(n)]

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """No per-sample metric for free text: returns ``{}``."""
        return {}
