"""ParallelBench-style list operations (testbed ``"tasks"``).

Each prompt asks for one operation on a list of 3-6 distinct first names (from the
shipped ``names.txt``); the answer is the resulting list followed by EOS padding::

    copy : alice bob carol =                ->  alice bob carol
    reverse : alice bob carol =             ->  carol bob alice
    sort : carol alice bob =                ->  alice bob carol        (alphabetical)
    shuffle : alice bob carol =             ->  any reordering other than the input
    insert_index 2 dave : alice bob carol = ->  alice dave bob carol   (dave becomes item 2)
    insert_random dave : alice bob carol =  ->  dave inserted at any one position
    remove_index 2 : alice bob carol =      ->  alice carol
    remove_random : alice bob carol =       ->  the input less any one item
    replace_index 2 dave : alice bob carol = -> alice dave carol
    replace_random dave : alice bob carol = ->  any one item replaced by dave

Indices are **1-based** positions in the list (as in ParallelBench's prompts): for
``insert_index i`` the new item is the i-th item of the result (1..n+1); for
``remove_index`` / ``replace_index`` it is the i-th item of the input (1..n). The
inserted or replacing name never occurs in the input.

Scoring follows ParallelBench's exact-match rules (``parallelbench/datasets/metrics.py``):
shuffle = same multiset and a different order; insert_random = the input with the
given item inserted at one position; remove_random = the input with exactly one
item removed; replace_random = the input with exactly one item replaced by the
given item. Training examples draw the answer uniformly among the valid answers,
so the random tasks have genuinely multi-modal targets, where sampling several
tokens from one forward's marginals fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from adjust.data.testbed import Example, Prompt, StableRandom, eos_pad
from adjust.data.tokenizer import EOS_ID, encode, word_tokenizer

TASKS: tuple[str, ...] = (
    "copy",
    "reverse",
    "sort",
    "shuffle",
    "insert_index",
    "insert_random",
    "remove_index",
    "remove_random",
    "replace_index",
    "replace_random",
)
SEPARATOR, END = ":", "="
DIGITS: tuple[str, ...] = tuple(str(i) for i in range(10))
_WITH_WORD = {"insert_index", "insert_random", "replace_index", "replace_random"}
_WITH_INDEX = {"insert_index", "remove_index", "replace_index"}


@cache
def load_names() -> tuple[str, ...]:
    """The shipped list of item names (``adjust/data/names.txt``)."""
    text = resources.files("adjust.data").joinpath("names.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class ListProblem:
    """One list operation: ``task`` on ``items``, with the ``word`` to insert or
    replace with and the 1-based ``index`` where the task takes them."""

    task: str
    items: tuple[str, ...]
    word: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if (self.word is None) == (self.task in _WITH_WORD):
            raise ValueError(f"task {self.task!r}: word must be given exactly for {sorted(_WITH_WORD)}")
        if (self.index is None) == (self.task in _WITH_INDEX):
            raise ValueError(f"task {self.task!r}: index must be given exactly for {sorted(_WITH_INDEX)}")
        if self.index is not None:
            top = len(self.items) + (self.task == "insert_index")
            if not 1 <= self.index <= top:
                raise ValueError(f"task {self.task!r}: index {self.index} outside 1..{top}")

    def prompt_text(self) -> str:
        """The prompt, e.g. ``"insert_index 2 dave : alice bob carol ="``."""
        head = [self.task]
        if self.index is not None:
            head.append(str(self.index))
        if self.word is not None:
            head.append(self.word)
        return " ".join([*head, SEPARATOR, *self.items, END])

    def valid_answers(self) -> list[tuple[str, ...]]:
        """Every correct answer, without duplicates, in a fixed order."""
        items, word, n = list(self.items), self.word, len(self.items)
        i = None if self.index is None else self.index - 1
        match self.task:
            case "copy":
                answers = [items]
            case "reverse":
                answers = [items[::-1]]
            case "sort":
                answers = [sorted(items)]
            case "shuffle":
                answers = [list(p) for p in itertools.permutations(items) if list(p) != items]
            case "insert_index":
                answers = [items[:i] + [word] + items[i:]]
            case "insert_random":
                answers = [items[:j] + [word] + items[j:] for j in range(n + 1)]
            case "remove_index":
                answers = [items[:i] + items[i + 1 :]]
            case "remove_random":
                answers = [items[:j] + items[j + 1 :] for j in range(n)]
            case "replace_index":
                answers = [items[:i] + [word] + items[i + 1 :]]
            case "replace_random":
                answers = [items[:j] + [word] + items[j + 1 :] for j in range(n) if items[j] != word]
        return list(dict.fromkeys(tuple(a) for a in answers))

    def is_correct(self, answer: Sequence[str]) -> bool:
        """Whether ``answer`` (a list of names) solves the problem, by ParallelBench's rules.

        Written as rules rather than by looking ``answer`` up in :meth:`valid_answers`,
        so the tests can check one against the other.
        """
        ans, items, word = list(answer), list(self.items), self.word
        match self.task:
            case "shuffle":
                return sorted(ans) == sorted(items) and ans != items
            case "insert_random":
                return len(ans) == len(items) + 1 and any(
                    ans[j] == word and ans[:j] + ans[j + 1 :] == items for j in range(len(ans))
                )
            case "remove_random":
                return len(ans) == len(items) - 1 and any(items[:j] + items[j + 1 :] == ans for j in range(len(items)))
            case "replace_random":
                if len(ans) != len(items):
                    return False
                diff = [j for j, (a, b) in enumerate(zip(ans, items, strict=True)) if a != b]
                return len(diff) == 1 and ans[diff[0]] == word
            case _:  # the deterministic tasks have exactly one answer
                return (tuple(ans),) == tuple(self.valid_answers())


class ListTasks:
    """Testbed ``"tasks"``: the ParallelBench-style list operations (see the module docstring).

    ``score()`` returns, per sample, ``correct`` (exact match by the task's rule),
    ``well_formed`` (the completion is names only up to its first EOS) and
    ``task_<name>`` (= ``correct``, present only for that sample's task, so its mean
    over the samples that have it is the per-task accuracy).

    A completion is read up to its first EOS (or whole if it has none); any token
    before that which is not a name (MASK, PAD, a task word, a digit, ...) makes it
    wrong.
    """

    name = "tasks"

    def __init__(
        self,
        gen_length: int = 8,
        tasks: Sequence[str] = TASKS,
        min_items: int = 3,
        max_items: int = 6,
    ) -> None:
        self.tasks = tuple(tasks)
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"unknown or no tasks {unknown}; expected a subset of {TASKS}")
        self.names = load_names()
        max_answer = max_items + any(t.startswith("insert") for t in self.tasks)
        if not 1 <= min_items <= max_items or max_items + 1 > min(len(self.names), len(DIGITS) - 1):
            raise ValueError(f"need 1 <= min_items <= max_items <= 8, got {min_items}, {max_items}")
        if gen_length <= max_answer:
            raise ValueError(f"gen_length {gen_length} leaves no room for EOS after {max_answer}-item answers")
        self.gen_length, self.min_items, self.max_items = gen_length, min_items, max_items
        self.tokenizer = word_tokenizer([*self.names, *TASKS, *DIGITS, SEPARATOR, END])
        self._name_of = {self.tokenizer.token_to_id(w): w for w in self.names}

    def _problem(self, rng: StableRandom) -> ListProblem:
        task = rng.choice(self.tasks)
        items = rng.sample(self.names, self.min_items + rng.below(self.max_items - self.min_items + 1))
        word = rng.choice([w for w in self.names if w not in items]) if task in _WITH_WORD else None
        index = 1 + rng.below(len(items) + (task == "insert_index")) if task in _WITH_INDEX else None
        return ListProblem(task, tuple(items), word, index)

    def problems(self, n: int, seed: int) -> list[ListProblem]:
        """``n`` random problems: task uniform over ``tasks``, item count uniform, distinct names."""
        rng = StableRandom(seed)
        return [self._problem(rng) for _ in range(n)]

    def examples(self, n: int, seed: int) -> list[Example]:
        """``n`` training examples, each answer drawn uniformly among the valid answers."""
        rng = StableRandom(seed)
        out = []
        for _ in range(n):
            problem = self._problem(rng)
            answer = rng.choice(problem.valid_answers())
            completion = eos_pad(encode(self.tokenizer, " ".join(answer)), self.gen_length)
            out.append(Example(prompt=encode(self.tokenizer, problem.prompt_text()), completion=completion))
        return out

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` evaluation prompts; ``meta`` holds ``task``, ``items``, ``word`` and ``index``."""
        return [
            Prompt(
                ids=encode(self.tokenizer, p.prompt_text()),
                meta={"task": p.task, "items": list(p.items), "word": p.word, "index": p.index},
            )
            for p in self.problems(n, seed)
        ]

    def prompt_from_ids(self, ids: Sequence[int]) -> Prompt:
        """The scorable `Prompt` of prompt ids (without BOS) made by :meth:`prompts`, e.g. from trajectories."""
        words = [self.tokenizer.id_to_token(int(i)) for i in ids]
        if SEPARATOR not in words or words[-1:] != [END]:
            raise ValueError(f"not a list-task prompt: {' '.join(map(str, words))!r}")
        head, items = words[: words.index(SEPARATOR)], words[words.index(SEPARATOR) + 1 : -1]
        task, rest = head[0], head[1:]
        index = int(rest.pop(0)) if task in _WITH_INDEX else None
        word = rest.pop(0) if task in _WITH_WORD else None
        p = ListProblem(task, tuple(items), word, index)
        return Prompt(ids=list(ids), meta={"task": p.task, "items": list(p.items), "word": p.word, "index": p.index})

    def parse(self, completion: Sequence[int]) -> list[str] | None:
        """The names in ``completion`` up to its first EOS, or ``None`` if anything else is there."""
        ids = [int(i) for i in completion]
        if EOS_ID in ids:
            ids = ids[: ids.index(EOS_ID)]
        names = [self._name_of.get(i) for i in ids]
        return None if None in names else names

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """Exact-match metrics of ``completion`` (see the class docstring)."""
        m = prompt.meta
        problem = ListProblem(m["task"], tuple(m["items"]), m.get("word"), m.get("index"))
        answer = self.parse(completion)
        correct = float(answer is not None and problem.is_correct(answer))
        return {"correct": correct, "well_formed": float(answer is not None), f"task_{problem.task}": correct}
