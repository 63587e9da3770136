"""The offline English corpus testbed: cleaning, split, tokenizer reproducibility, windows."""

import os
import subprocess
import sys

import pytest

from adjust.data import (
    BOS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    TextCorpus,
    corpus_paragraphs,
    decode,
    encode,
    save_tokenizer,
    testbed,
    tokenizer_fingerprint,
)


@pytest.fixture(scope="module")
def corpus() -> TextCorpus:
    return TextCorpus()


def test_paragraphs_are_clean_prose():
    paras = corpus_paragraphs()
    assert len(paras) > 800 and sum(map(len, paras)) > 150_000
    assert len(set(paras)) == len(paras)
    for p in paras:
        assert p.isascii() and "\n" not in p and "  " not in p and p == p.strip()
        assert "::=" not in p and ">>>" not in p and "****" not in p
        assert p[-1] in ".?!:" and len(p.split()) >= 6
    assert any(p.startswith('The "if" statement is used for conditional execution') for p in paras)


def test_split_is_disjoint_and_sized(corpus):
    train, held = corpus.paragraphs["train"], corpus.paragraphs["heldout"]
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(corpus_paragraphs())
    assert 0.05 < len(held) / (len(train) + len(held)) < 0.15
    other = TextCorpus(heldout_fraction=0.3, tokenizer=corpus.tokenizer)
    assert set(held) <= set(other.paragraphs["heldout"])  # hash split: a larger fraction only adds


def test_tokenizer_specials_and_round_trip(corpus):
    tok = corpus.tokenizer
    assert tok.get_vocab_size() == 1024
    assert [tok.token_to_id(t) for t in ("[PAD]", "[BOS]", "[EOS]", "[MASK]")] == [PAD_ID, BOS_ID, EOS_ID, MASK_ID]
    for p in corpus.paragraphs["heldout"][:50]:
        assert decode(tok, encode(tok, p)) == p
    ids = encode(tok, " ".join(corpus.paragraphs["train"][:20]))
    assert len(ids) < 0.4 * len(" ".join(corpus.paragraphs["train"][:20]))  # BPE actually merges


def test_tokenizer_is_reproducible_across_processes(corpus, tmp_path):
    fp = tokenizer_fingerprint(corpus.tokenizer)
    assert tokenizer_fingerprint(TextCorpus().tokenizer) == fp
    code = (
        "from adjust.data import TextCorpus, tokenizer_fingerprint\n"
        "print(tokenizer_fingerprint(TextCorpus().tokenizer))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "RAYON_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fp
    assert corpus.tokenizer.to_str() == TextCorpus().tokenizer.to_str()
    # a given tokenizer (object or file) is used as is
    path = save_tokenizer(corpus.tokenizer, tmp_path)
    assert tokenizer_fingerprint(TextCorpus(tokenizer=path).tokenizer) == fp
    assert tokenizer_fingerprint(TextCorpus(vocab_size=600).tokenizer) != fp


def test_examples_are_windows_of_the_split(corpus):
    ex = corpus.examples(200, seed=0)
    assert ex == corpus.examples(200, seed=0) and ex != corpus.examples(200, seed=1)
    train_text = "\n".join(corpus.paragraphs["train"])
    held_text = "\n".join(corpus.paragraphs["heldout"])
    for e in ex[:50]:
        assert e.prompt == [] and len(e.completion) == 32
        assert decode(corpus.tokenizer, e.completion) in train_text
    for e in corpus.examples(50, seed=0, split="heldout"):
        assert decode(corpus.tokenizer, e.completion) in held_text
    short = TextCorpus(gen_length=8, tokenizer=corpus.tokenizer)
    assert all(len(e.completion) == 8 for e in short.examples(10, seed=0))


def test_prompts_and_score(corpus):
    assert isinstance(corpus, testbed.Testbed)
    assert all(p.ids == [] for p in corpus.prompts(4, seed=0))
    assert corpus.score(corpus.prompts(1, seed=0)[0], corpus.examples(1, seed=0)[0].completion) == {}
    with pytest.raises(ValueError):
        TextCorpus(heldout_fraction=0.0, tokenizer=corpus.tokenizer)
