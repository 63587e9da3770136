"""What every testbed provides: training examples, evaluation prompts and a scorer.

A testbed is a data source plus its metric. Training code asks for
:class:`Example` s, evaluation code for :class:`Prompt` s, generates ``gen_length``
tokens after each prompt (the engine prepends BOS) and hands the generated ids to
:meth:`Testbed.score`. All data is a deterministic function of the ``seed`` given,
drawn with :class:`StableRandom`, so it is the same on any machine and Python
version. Choosing different seeds for training and evaluation is the caller's job.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import tokenizers

from adjust.data.tokenizer import EOS_ID

T = TypeVar("T")

#: The built-in testbeds: the three shipped ones, then two strongly coupled languages.
TESTBEDS: tuple[str, ...] = ("synthetic", "tasks", "text", "mirror", "dyck")


@dataclass(frozen=True)
class Example:
    """One training sequence.

    ``prompt`` holds the prompt ids without BOS (empty for unconditional data);
    ``completion`` holds exactly ``gen_length`` target ids: the answer, then EOS
    padding where the answer is shorter.
    """

    prompt: list[int]
    completion: list[int]


@dataclass(frozen=True)
class Prompt:
    """One evaluation prompt: ``ids`` without BOS, ``meta`` for the scorer."""

    ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Testbed(Protocol):
    """A data source with its metric (see the module docstring)."""

    name: str
    gen_length: int
    tokenizer: tokenizers.Tokenizer

    def examples(self, n: int, seed: int) -> list[Example]:
        """``n`` training examples drawn with ``seed``."""
        ...

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` evaluation prompts drawn with ``seed``."""
        ...

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """Per-sample metrics of ``completion`` (``gen_length`` generated ids) for ``prompt``."""
        ...


def get_testbed(name: str, **kw: Any) -> Testbed:
    """Build a testbed by name (one of `TESTBEDS`) or from a ``*.jsonl`` path.

    Keyword arguments go to the testbed's constructor.
    """
    # Imported here because every testbed module imports this one.
    if name == "synthetic":
        from adjust.data.synthetic import HMMLanguage

        return HMMLanguage(**kw)
    if name == "tasks":
        from adjust.data.tasks import ListTasks

        return ListTasks(**kw)
    if name == "text":
        from adjust.data.text import TextCorpus

        return TextCorpus(**kw)
    if name == "mirror":
        from adjust.data.mirror import MirrorLanguage

        return MirrorLanguage(**kw)
    if name == "dyck":
        from adjust.data.dyck import DyckLanguage

        return DyckLanguage(**kw)
    if name.endswith(".jsonl"):
        from adjust.data.jsonl import JsonlDataset

        return JsonlDataset(name, **kw)
    raise ValueError(f"unknown testbed {name!r}: expected one of {', '.join(TESTBEDS)} or a path ending in .jsonl")


def eos_pad(ids: Sequence[int], length: int) -> list[int]:
    """``ids`` cut to ``length``, or right-padded with EOS up to it."""
    ids = [int(i) for i in ids[:length]]
    return ids + [EOS_ID] * (length - len(ids))


class StableRandom:
    """A seeded generator that gives the same stream on every machine and Python version.

    Python guarantees reproducibility only for ``random.Random.random()``
    (``randrange``, ``shuffle``, ``sample`` and NumPy's ``Generator`` methods may
    change between versions), so every draw here is built from ``random()`` alone.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(int(seed))

    def random(self) -> float:
        """A float uniform in [0, 1)."""
        return self._rng.random()

    def below(self, n: int) -> int:
        """An int uniform in [0, n)."""
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        # min() guards the (theoretical) float rounding of random()*n up to n.
        return min(int(self._rng.random() * n), n - 1)

    def choice(self, seq: Sequence[T]) -> T:
        """A uniformly chosen element of ``seq``."""
        return seq[self.below(len(seq))]

    def shuffled(self, seq: Sequence[T]) -> list[T]:
        """A uniformly random permutation of ``seq`` (Fisher-Yates), as a new list."""
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """``k`` distinct elements of ``seq`` in random order."""
        if not 0 <= k <= len(seq):
            raise ValueError(f"cannot sample {k} of {len(seq)} elements")
        out = list(seq)
        for i in range(k):
            j = i + self.below(len(out) - i)
            out[i], out[j] = out[j], out[i]
        return out[:k]
