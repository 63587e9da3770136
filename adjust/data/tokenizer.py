"""Tokenizers for the testbeds: word-level vocabularies and byte-level BPE.

Every tokenizer made here is a plain :class:`tokenizers.Tokenizer` whose first four
ids are the same special tokens, so models, samplers and trajectories can rely on
them without asking the tokenizer:

==========  ====
``[PAD]``   0
``[BOS]``   1
``[EOS]``   2
``[MASK]``  3
==========  ====

:func:`encode` and :func:`decode` are the helpers the rest of the package uses; they
never add special tokens themselves (the generation engine prepends BOS).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS, MASK = "[PAD]", "[BOS]", "[EOS]", "[MASK]"
PAD_ID, BOS_ID, EOS_ID, MASK_ID = 0, 1, 2, 3
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, MASK)

# Deliberately absent from word vocabularies: an unknown word is an error, not a
# silent [UNK] that a scorer could mistake for a real token.
_UNK = "[UNK]"
TOKENIZER_FILE = "tokenizer.json"


def word_tokenizer(words: Sequence[str]) -> Tokenizer:
    """Word-level tokenizer: the specials at ids 0..3, then ``words`` in order.

    Text is split on whitespace only, so a word may contain punctuation (``"->"``).
    Encoding a word that is not in the vocabulary raises ``ValueError`` in
    :func:`encode` (there is no ``[UNK]`` token). Decoding joins words with spaces.
    """
    words = list(words)
    clash = sorted(set(words) & set(SPECIAL_TOKENS))
    if clash:
        raise ValueError(f"word list contains special tokens: {clash}")
    if len(set(words)) != len(words):
        raise ValueError("word list contains duplicates")
    if any(not w or any(c.isspace() for c in w) for w in words):
        raise ValueError("words must be non-empty and contain no whitespace")
    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=_UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) with the specials at ids 0..3.

    All 256 byte symbols are in the vocabulary, so any text encodes and
    ``decode(encode(text)) == text``. Training is deterministic: the same texts and
    ``vocab_size`` give the same tokenizer JSON.
    """
    min_size = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < min_size:
        raise ValueError(f"vocab_size must be at least {min_size} for byte-level BPE, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    _check_specials(tok)
    return tok


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """SHA-256 hex digest of the parts of ``tok`` that decide encoding and decoding.

    Covers the model (vocabulary, merges), added tokens, normalizer, pre-tokenizer,
    post-processor and decoder, serialised canonically (sorted keys); padding and
    truncation settings are ignored. Stable across :func:`save_tokenizer` /
    :func:`load_tokenizer`.
    """
    state = json.loads(tok.to_str())
    keys = ("model", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder")
    canonical = json.dumps({k: state.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _tokenizer_path(path: str | Path) -> Path:
    path = Path(path)
    return path / TOKENIZER_FILE if path.is_dir() else path


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    """Write ``tok`` as JSON to ``path`` (or ``path/tokenizer.json`` if ``path`` is a directory).

    Returns the file written.
    """
    file = _tokenizer_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(file))
    return file


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer JSON file (or ``path/tokenizer.json``) and check its special ids."""
    file = _tokenizer_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer file at {file}")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception with serde's message
        raise ValueError(f"{file}: not a valid tokenizer file ({str(e).splitlines()[0]})") from None
    try:
        _check_specials(tok)
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from None
    return tok


def _check_specials(tok: Tokenizer) -> None:
    got = {s: tok.token_to_id(s) for s in SPECIAL_TOKENS}
    want = dict(zip(SPECIAL_TOKENS, (PAD_ID, BOS_ID, EOS_ID, MASK_ID), strict=True))
    if got != want:
        raise ValueError(f"tokenizer special token ids {got} differ from the required {want}")


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text``, without BOS/EOS. Raises ``ValueError`` on out-of-vocabulary words."""
    try:
        return tok.encode(text, add_special_tokens=False).ids
    except Exception as err:  # tokenizers raises a bare Exception for a missing [UNK]
        if _UNK not in str(err):
            raise
        vocab = tok.get_vocab()
        unknown = sorted({w for w in text.split() if w not in vocab})
        raise ValueError(f"words not in the tokenizer's vocabulary: {unknown}") from None


def decode(tok: Tokenizer, ids: Iterable[int], stop_at_eos: bool = True) -> str:
    """Text of ``ids`` (any iterable of ints, e.g. a list or a 1-D tensor).

    With ``stop_at_eos`` everything from the first EOS on is dropped; special
    tokens (PAD, BOS, MASK, and EOS otherwise) are left out of the text.
    """
    ids = [int(i) for i in ids]
    if stop_at_eos and EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    return tok.decode(ids, skip_special_tokens=True)
