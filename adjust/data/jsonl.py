"""User data from a JSON Lines file (testbed for any path ending in ``.jsonl``).

Each non-blank line is one JSON object in one of four forms (other keys are ignored):

=======================================  =============================================
``{"text": str}``                        unconditional text, cut into ``gen_length``-token
                                         examples (the last one EOS-padded)
``{"prompt": str, "completion": str}``   one conditional example; the completion is cut
                                         or EOS-padded to ``gen_length``
``{"input_ids": [int]}``                 like ``text``, already tokenized
``{"prompt_ids": [int],``                like ``prompt``/``completion``, already tokenized
``"completion_ids": [int]}``
=======================================  =============================================

Text records need a tokenizer: the one given, or else a byte-level BPE trained on
all the file's texts. A file that mixes id records and text records needs an explicit
tokenizer. Every problem is reported as :class:`JsonlDataError` naming the file and line.

**Token ids.** The package reserves model ids 0..3 for ``[PAD] [BOS] [EOS] [MASK]``.

- *With a tokenizer* (``--tokenizer``), ids are that tokenizer's ids: they are checked
  against its vocabulary, and the mask id may appear in prompts (infilling) but not in
  targets.
- *Without one*, ids are the data's own symbols ``0 .. n-1`` (any non-negative ints): the
  model sees id ``i`` as ``i + ID_OFFSET`` (``ID_OFFSET`` = 4, past the reserved ids), so
  no data id can collide with a special token, and ``n`` (``vocab_size``) defaults to
  the largest id + 1. The offset is stored in the model's config (``extra.id_offset``);
  ``adjust generate --json`` and ``adjust data --prompts`` map ids back and forth with it,
  so users only ever see their own ids. (No infilling here: there is no data id for a mask.)

"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from adjust.data.testbed import Example, Prompt, StableRandom, eos_pad
from adjust.data.tokenizer import EOS_ID, MASK_ID, SPECIAL_TOKENS, encode, load_tokenizer, train_bpe

_SCHEMAS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "pair": ("prompt", "completion"),
    "ids": ("input_ids",),
    "pair_ids": ("prompt_ids", "completion_ids"),
}
_DEFAULT_BPE_VOCAB = 1024
DEFAULT_TEXT_GEN_LENGTH = 32  # the window a file of ``text`` records is cut into, unless given
ID_OFFSET = len(SPECIAL_TOKENS)  # model id of data id 0 for token-id data without a tokenizer


class JsonlDataError(ValueError):
    """A malformed JSONL dataset; the message names the file and line."""


class JsonlDataset:
    """Testbed over a user's JSONL file (see the module docstring for the record forms).

    Args:
        path: the ``.jsonl`` file.
        tokenizer: a tokenizer or the path of one; ``None`` trains a BPE on the
            file's texts (or, for a file of token ids only, leaves ``tokenizer`` None).
        gen_length: target tokens per example. Default: the longest target of the file
            (``input_ids``, ``completion`` or ``completion_ids``), so no record is cut and
            shorter ones are EOS-padded only to it; ``DEFAULT_TEXT_GEN_LENGTH`` for a file
            with ``text`` records (a stream cut into windows).
        vocab_size: text data: size of the BPE trained when no tokenizer is given
            (default 1024). Token-id data without a tokenizer: the number of data ids
            (every id must be below it; default: the largest id + 1).

    ``examples(n, seed)`` draws from the file's examples in random order, reshuffling
    after each pass; ``prompts(n, seed)`` does the same over the conditional records
    (``meta`` has the ``line`` and the ``reference`` completion ids), or gives empty
    BOS-only prompts when the file has none. ``score()`` returns ``{}``.
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | Path,
        tokenizer: Tokenizer | str | Path | None = None,
        gen_length: int | None = None,
        vocab_size: int | None = None,
    ) -> None:
        if gen_length is not None and gen_length < 1:
            raise ValueError(f"gen_length must be positive, got {gen_length}")
        self.path = Path(path)
        records = self._read()
        kinds = {kind for _, kind, _ in records}
        if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
            tokenizer = load_tokenizer(tokenizer)
        if tokenizer is None and kinds & {"text", "pair"}:
            if kinds & {"ids", "pair_ids"}:
                raise JsonlDataError(
                    f"{self.path}: mixes text and token-id records; pass the tokenizer the ids belong to"
                )
            texts = [rec[k] for _, kind, rec in records for k in _SCHEMAS[kind]]
            tokenizer = train_bpe(texts, vocab_size or _DEFAULT_BPE_VOCAB)
        self.tokenizer = tokenizer
        #: added to data ids to make model ids (token-id data without a tokenizer), else 0
        self.id_offset = 0 if tokenizer is not None else ID_OFFSET
        if tokenizer is not None:
            self._id_bound = tokenizer.get_vocab_size()
        else:
            self._id_bound = vocab_size if vocab_size is not None else 1 + max(
                (max(rec[k], default=-1) for _, kind, rec in records for k in _SCHEMAS[kind]
                 if isinstance(rec[k], list) and all(isinstance(i, int) for i in rec[k])), default=0)
        #: vocabulary size a model for this data needs (the specials included)
        self.vocab_size = self._id_bound + self.id_offset

        rows: list[tuple[int, list[int] | None, list[int]]] = []  # line, prompt (None: a stream), target
        for line, kind, rec in records:
            if kind == "ids":
                rows.append((line, None, self._ids(line, rec, "input_ids", target=True)))
            elif kind == "text":
                ids = self._encode(line, rec["text"])
                if not ids:
                    raise JsonlDataError(f"{self.path}:{line}: 'text' encodes to no tokens")
                rows.append((line, None, ids))
            elif kind == "pair_ids":
                rows.append((line, self._ids(line, rec, "prompt_ids", target=False),
                             self._ids(line, rec, "completion_ids", target=True)))
            else:
                rows.append((line, self._encode(line, rec["prompt"]), self._encode(line, rec["completion"])))
        if gen_length is None:
            longest = max(len(target) for _, _, target in rows)
            gen_length = DEFAULT_TEXT_GEN_LENGTH if "text" in kinds else max(1, longest)
        self.gen_length = gen_length

        self._examples: list[Example] = []
        self._prompts: list[Prompt] = []
        for line, prompt, ids in rows:
            if prompt is None:  # a stream: cut into gen_length windows, the last one EOS-padded
                for start in range(0, len(ids), gen_length):
                    self._examples.append(Example(prompt=[], completion=eos_pad(ids[start : start + gen_length],
                                                                                 gen_length)))
            else:
                completion = eos_pad(ids, gen_length)
                self._examples.append(Example(prompt=prompt, completion=completion))
                self._prompts.append(Prompt(ids=prompt, meta={"line": line, "reference": completion}))

    def _read(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(line number, record kind, record) for every non-blank line, validated."""
        if not self.path.is_file():
            raise FileNotFoundError(f"no JSONL file at {self.path}")
        records = []
        with self.path.open("rb") as f:
            for line, raw in enumerate(f, start=1):
                raw = decode_line(raw, self.path, line)
                if not raw.strip():
                    continue
                where = f"{self.path}:{line}"
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise JsonlDataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(rec, dict):
                    raise JsonlDataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
                kinds = [k for k, keys in _SCHEMAS.items() if all(key in rec for key in keys)]
                if len(kinds) != 1:
                    forms = " or ".join("{" + ", ".join(map(repr, keys)) + "}" for keys in _SCHEMAS.values())
                    found = "several forms at once" if kinds else f"keys {sorted(rec)}"
                    raise JsonlDataError(f"{where}: expected exactly one record form of {forms}; found {found}")
                kind = kinds[0]
                for key in _SCHEMAS[kind] if kind in ("text", "pair") else ():
                    if not isinstance(rec[key], str):
                        raise JsonlDataError(f"{where}: {key!r} must be a string, got {type(rec[key]).__name__}")
                if kind == "text" and not rec["text"]:
                    raise JsonlDataError(f"{where}: 'text' is empty")
                records.append((line, kind, rec))
        if not records:
            raise JsonlDataError(f"{self.path}: the file has no records")
        return records

    def _encode(self, line: int, text: str) -> list[int]:
        assert self.tokenizer is not None  # text records always have one by now
        try:
            return encode(self.tokenizer, text)
        except ValueError as err:  # out-of-vocabulary words with a word-level tokenizer
            raise JsonlDataError(f"{self.path}:{line}: {err}") from None

    def _ids(self, line: int, rec: dict[str, Any], key: str, target: bool) -> list[int]:
        """The validated token-id list ``rec[key]``."""
        where = f"{self.path}:{line}: {key!r}"
        ids = rec[key]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise JsonlDataError(f"{where} must be a list of integers")
        if key == "input_ids" and not ids:
            raise JsonlDataError(f"{where} is empty")
        bad = [i for i in ids if i < 0 or i >= self._id_bound]
        if bad:
            hint = "" if self.tokenizer is not None else " (--vocab-size sets the number of data ids)"
            raise JsonlDataError(f"{where} has ids out of range [0, {self._id_bound}): {bad[:5]}{hint}")
        if self.tokenizer is not None and target and MASK_ID in ids:
            raise JsonlDataError(
                f"{where} contains id {MASK_ID}, the tokenizer's [MASK]: ids 0..3 are reserved for "
                "[PAD] [BOS] [EOS] [MASK] and only a prompt may hold [MASK] (infilling)")
        return [i + self.id_offset for i in ids]

    def __len__(self) -> int:
        """Number of training examples in the file (after chunking)."""
        return len(self._examples)

    def examples(self, n: int, seed: int) -> list[Example]:
        """``n`` of the file's examples, in random order, reshuffled after each pass."""
        return _draw(self._examples, n, seed)

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` of the file's prompts (or BOS-only prompts if it has none)."""
        if not self._prompts:
            return [Prompt(ids=[], meta={"testbed": self.name}) for _ in range(n)]
        return _draw(self._prompts, n, seed)

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """No metric for arbitrary user data: returns ``{}``."""
        return {}


def decode_line(raw: bytes, path: str | Path, line: int) -> str:
    """A line of a JSONL file as text; JsonlDataError names the file and line of bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlDataError(f"{path}:{line}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                             "save the file as UTF-8") from None


def to_data_ids(model_ids: list[int], id_offset: int) -> list[int | None]:
    """A generated completion in the data's own ids: cut at its first EOS (the data were
    EOS-padded), each id less `id_offset`; a special token other than EOS becomes None.
    With `id_offset` 0 (tokenizer ids) the ids are returned whole."""
    if not id_offset:
        return list(model_ids)
    ids = list(model_ids)
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    return [i - id_offset if i >= id_offset else None for i in ids]


def _draw(pool: list, n: int, seed: int) -> list:
    rng = StableRandom(seed)
    out: list = []
    while len(out) < n:
        out += rng.shuffled(pool)
    return out[:n]
