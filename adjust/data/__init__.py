"""Testbeds (data + metrics) and tokenizers.

``get_testbed("synthetic" | "tasks" | "text" | "path/to/data.jsonl", **kw)`` returns an
object with ``examples(n, seed)``, ``prompts(n, seed)`` and ``score(prompt, completion)``;
see :mod:`adjust.data.testbed`.
"""

from adjust.data.jsonl import JsonlDataError, JsonlDataset
from adjust.data.synthetic import HMMLanguage
from adjust.data.tasks import TASKS, ListProblem, ListTasks
from adjust.data.testbed import Example, Prompt, StableRandom, Testbed, eos_pad, get_testbed
from adjust.data.text import TextCorpus, corpus_paragraphs
from adjust.data.tokenizer import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    MASK,
    MASK_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    decode,
    encode,
    load_tokenizer,
    save_tokenizer,
    tokenizer_fingerprint,
    train_bpe,
    word_tokenizer,
)

__all__ = [
    "BOS",
    "BOS_ID",
    "EOS",
    "EOS_ID",
    "MASK",
    "MASK_ID",
    "PAD",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TASKS",
    "Example",
    "HMMLanguage",
    "JsonlDataError",
    "JsonlDataset",
    "ListProblem",
    "ListTasks",
    "Prompt",
    "StableRandom",
    "Testbed",
    "TextCorpus",
    "corpus_paragraphs",
    "decode",
    "encode",
    "eos_pad",
    "get_testbed",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_fingerprint",
    "train_bpe",
    "word_tokenizer",
]
