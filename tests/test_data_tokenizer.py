"""Tokenizers: fixed special ids, word-level and BPE encoding, fingerprints, save/load."""

import numpy as np
import pytest
import torch

from adjust.data import (
    BOS_ID,
    EOS_ID,
    MASK_ID,
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

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Masked diffusion models unmask several tokens per step; ADJUST keeps them consistent.",
    "Sphinx of black quartz, judge my vow!  Tabs\tand\nnewlines stay.",
] * 20


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(CORPUS, vocab_size=300)


def test_special_ids_are_fixed(bpe):
    assert (PAD_ID, BOS_ID, EOS_ID, MASK_ID) == (0, 1, 2, 3)
    for tok in (word_tokenizer(["x", "y"]), bpe):
        assert [tok.token_to_id(s) for s in SPECIAL_TOKENS] == [0, 1, 2, 3]


def test_word_tokenizer():
    tok = word_tokenizer(["alice", "bob", "->", "insert_index"])
    assert tok.get_vocab_size() == 8
    assert encode(tok, "alice -> bob") == [4, 6, 5]
    assert encode(tok, "  insert_index\talice\n") == [7, 4]
    assert encode(tok, "alice [MASK] bob") == [4, MASK_ID, 5]
    assert decode(tok, [4, 6, 5, EOS_ID, 4]) == "alice -> bob"
    with pytest.raises(ValueError, match=r"not in the tokenizer's vocabulary: \['carol', 'dan'\]"):
        encode(tok, "alice carol dan")
    for bad in (["a", "a"], ["a b"], ["[EOS]"], [""]):
        with pytest.raises(ValueError):
            word_tokenizer(bad)


def test_bpe_round_trips_ordinary_text(bpe):
    assert 256 < bpe.get_vocab_size() <= 300
    for text in [*CORPUS[:3], "unseen wörds — ünïcode ✓ and  double  spaces\n", "x = f(1, 2)  # code"]:
        assert decode(bpe, encode(bpe, text)) == text
    assert len(encode(bpe, CORPUS[0])) < len(CORPUS[0])  # merges were learned
    with pytest.raises(ValueError, match="at least 260"):
        train_bpe(CORPUS, vocab_size=100)


def test_bpe_training_is_deterministic(bpe):
    assert train_bpe(CORPUS, vocab_size=300).to_str() == bpe.to_str()
    assert train_bpe(reversed(CORPUS), vocab_size=300).to_str() == bpe.to_str()


def test_decode_stops_at_eos_and_drops_specials(bpe):
    a, b = encode(bpe, "hello"), encode(bpe, " world")
    ids = [BOS_ID, *a, MASK_ID, PAD_ID, EOS_ID, *b]
    assert decode(bpe, ids) == "hello"
    assert decode(bpe, ids, stop_at_eos=False) == "hello world"
    assert decode(bpe, torch.tensor(ids)) == decode(bpe, np.array(ids)) == "hello"
    assert decode(bpe, [EOS_ID, *a]) == ""


def test_fingerprint_is_stable_and_discriminating(bpe, tmp_path):
    fp = tokenizer_fingerprint(bpe)
    assert len(fp) == 64 and int(fp, 16) >= 0
    path = save_tokenizer(bpe, tmp_path)  # a directory: writes tokenizer.json inside
    assert path == tmp_path / "tokenizer.json"
    loaded = load_tokenizer(tmp_path)
    assert tokenizer_fingerprint(loaded) == fp and loaded.to_str() == bpe.to_str()
    assert tokenizer_fingerprint(load_tokenizer(save_tokenizer(bpe, tmp_path / "sub" / "t.json"))) == fp
    loaded.enable_padding(pad_id=PAD_ID)  # padding settings do not change what ids mean
    assert tokenizer_fingerprint(loaded) == fp
    assert tokenizer_fingerprint(train_bpe(CORPUS, vocab_size=290)) != fp
    assert tokenizer_fingerprint(word_tokenizer(["a", "b"])) != tokenizer_fingerprint(word_tokenizer(["b", "a"]))


def test_load_rejects_foreign_special_ids(tmp_path):
    from tokenizers import Tokenizer, models

    foreign = Tokenizer(models.WordLevel({"[UNK]": 0, "[MASK]": 1}, unk_token="[UNK]"))
    foreign.save(str(tmp_path / "f.json"))
    with pytest.raises(ValueError, match="special token ids"):
        load_tokenizer(tmp_path / "f.json")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "none.json")
