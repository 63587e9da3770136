"""User JSONL data: the four record forms, chunking, padding and error messages."""

import json
from pathlib import Path

import pytest

from adjust.data import (
    EOS_ID,
    MASK_ID,
    JsonlDataError,
    JsonlDataset,
    decode,
    encode,
    get_testbed,
    save_tokenizer,
    testbed,
    word_tokenizer,
)
from adjust.data.jsonl import DEFAULT_TEXT_GEN_LENGTH, ID_OFFSET, to_data_ids

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "Q:", "A:"]


def write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def words_tok():
    return word_tokenizer(WORDS)


def test_text_records_are_chunked_and_bpe_trained(tmp_path):
    texts = ["The quick brown fox jumps over the lazy dog. " * 6, "A short line."]
    ds = JsonlDataset(write(tmp_path / "t.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)]), gen_length=16)
    assert ds.tokenizer is not None and ds.tokenizer.get_vocab_size() <= 1024
    chunks = ds.examples(len(ds), seed=0)
    assert all(e.prompt == [] and len(e.completion) == 16 for e in chunks)
    ids0 = encode(ds.tokenizer, texts[0])
    assert len(ds) == -(-len(ids0) // 16) + 1
    # in file order, the chunks concatenate back to the texts
    ordered = ds._examples
    joined = [i for e in ordered[:-1] for i in e.completion if i != EOS_ID]
    assert decode(ds.tokenizer, joined) == texts[0]
    assert decode(ds.tokenizer, ordered[-1].completion) == texts[1]
    assert ordered[-1].completion[-1] == EOS_ID
    assert ds.prompts(3, seed=0)[0].ids == []  # no conditional records: BOS-only prompts


def test_prompt_completion_records(tmp_path, words_tok):
    recs = [
        {"prompt": "Q: the cat", "completion": "A: sat on the mat"},
        {"prompt": "Q: a dog", "completion": "A: the dog ran on the mat the cat sat"},
    ]
    ds = JsonlDataset(write(tmp_path / "p.jsonl", recs), tokenizer=words_tok, gen_length=6)
    e0, e1 = ds._examples
    assert e0.prompt == encode(words_tok, "Q: the cat")
    assert e0.completion == encode(words_tok, "A: sat on the mat") + [EOS_ID]
    assert e1.completion == encode(words_tok, "A: the dog ran on the")  # truncated, no EOS
    prompts = ds.prompts(4, seed=1)
    assert sorted(p.meta["line"] for p in prompts) == [1, 1, 2, 2]  # every record once per pass
    assert all(p.meta["reference"] == ds._examples[p.meta["line"] - 1].completion for p in prompts)
    assert ds.score(prompts[0], e0.completion) == {}


def test_token_id_records(tmp_path, words_tok):
    recs = [{"input_ids": list(range(4, 14))}, {"prompt_ids": [4, MASK_ID, 5], "completion_ids": [6, 7]}]
    ds = JsonlDataset(write(tmp_path / "i.jsonl", recs), tokenizer=words_tok, gen_length=4)
    assert [e.completion for e in ds._examples] == [
        [4, 5, 6, 7],
        [8, 9, 10, 11],
        [12, 13, EOS_ID, EOS_ID],
        [6, 7, EOS_ID, EOS_ID],
    ]
    assert ds._examples[-1].prompt == [4, MASK_ID, 5]  # masks in a prompt are allowed (infilling)
    assert ds.id_offset == 0 and ds.vocab_size == words_tok.get_vocab_size()


def test_token_ids_without_a_tokenizer_are_shifted_past_the_specials(tmp_path):
    # the data's own ids 0..n-1, the reserved ones included: model id = data id + 4
    recs = [{"input_ids": [0, 1, 2, 3, 9]}, {"prompt_ids": [3, 0], "completion_ids": [2]}]
    ds = JsonlDataset(write(tmp_path / "j.jsonl", recs), gen_length=5)
    assert ds.tokenizer is None and ds.id_offset == ID_OFFSET == 4
    assert ds.vocab_size == 10 + 4  # largest data id + 1, plus the specials
    assert [e.completion for e in ds._examples] == [[4, 5, 6, 7, 13], [6, EOS_ID, EOS_ID, EOS_ID, EOS_ID]]
    assert ds._examples[1].prompt == [7, 4]
    assert JsonlDataset(tmp_path / "j.jsonl", gen_length=5, vocab_size=12).vocab_size == 16
    with pytest.raises(JsonlDataError, match=r"j\.jsonl:1: 'input_ids' has ids out of range \[0, 9\): \[9\] "
                                             r"\(--vocab-size sets the number of data ids\)"):
        JsonlDataset(tmp_path / "j.jsonl", gen_length=5, vocab_size=9)
    # and back: generated model ids -> data ids, cut at EOS, other specials as None
    assert to_data_ids([4, 13, 1, 7, EOS_ID, 5], 4) == [0, 9, None, 3]
    assert to_data_ids([4, 13, EOS_ID], 0) == [4, 13, EOS_ID]


def test_examples_draw_cycles_deterministically(tmp_path):
    ds = JsonlDataset(write(tmp_path / "c.jsonl", [{"input_ids": [4 + i]} for i in range(5)]), gen_length=2)
    ex = ds.examples(12, seed=3)
    assert ex == ds.examples(12, seed=3)
    assert sorted(e.completion[0] for e in ex[:5]) == [8, 9, 10, 11, 12]  # a full pass before repeats (ids + 4)
    assert sorted(e.completion[0] for e in ex[5:10]) == [8, 9, 10, 11, 12]
    assert [e.completion for e in ex] != [e.completion for e in ds.examples(12, seed=4)]


def test_get_testbed_resolves_jsonl_paths(tmp_path, words_tok):
    path = write(tmp_path / "g.jsonl", [{"text": "the cat sat"}])
    tok_file = save_tokenizer(words_tok, tmp_path / "tok")
    ds = get_testbed(str(path), tokenizer=tok_file, gen_length=5)
    assert isinstance(ds, JsonlDataset) and isinstance(ds, testbed.Testbed)
    assert ds.examples(1, seed=0)[0].completion == encode(words_tok, "the cat sat") + [EOS_ID, EOS_ID]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], r"e\.jsonl: the file has no records"),
        (["", "   "], r"e\.jsonl: the file has no records"),
        ([{"text": "the cat"}, '{"text": "the'], r"e\.jsonl:2: invalid JSON"),
        (["[1, 2]"], r"e\.jsonl:1: expected a JSON object, got list"),
        ([{"text": "the"}, {"prompt": "the"}], r"e\.jsonl:2: expected exactly one record form .*keys \['prompt'\]"),
        ([{"text": "the", "input_ids": [4]}], r"e\.jsonl:1: .*several forms at once"),
        ([{"text": 3}], r"e\.jsonl:1: 'text' must be a string, got int"),
        ([{"text": ""}], r"e\.jsonl:1: 'text' is empty"),
        ([{"text": " \n "}], r"e\.jsonl:1: 'text' encodes to no tokens"),
        ([{"input_ids": [4, 99]}], r"e\.jsonl:1: 'input_ids' has ids out of range \[0, 14\): \[99\]"),
        ([{"input_ids": [4, -1]}], r"e\.jsonl:1: 'input_ids' has ids out of range"),
        ([{"input_ids": [4, 1.5]}], r"e\.jsonl:1: 'input_ids' must be a list of integers"),
        ([{"input_ids": [4, True]}], r"e\.jsonl:1: 'input_ids' must be a list of integers"),
        ([{"input_ids": []}], r"e\.jsonl:1: 'input_ids' is empty"),
        ([{"prompt_ids": [4], "completion_ids": [5, MASK_ID]}],
         r"e\.jsonl:1: 'completion_ids' contains id 3, the tokenizer's \[MASK\]: ids 0\.\.3 are reserved"),
        (
            [{"text": "the cat"}, {"text": "the zebra"}],
            r"e\.jsonl:2: words not in the tokenizer's vocabulary: .'zebra'",
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path, words_tok, lines, message):
    path = write(tmp_path / "e.jsonl", lines)
    with pytest.raises(JsonlDataError, match=message):
        JsonlDataset(path, tokenizer=words_tok)


def test_other_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        JsonlDataset(tmp_path / "missing.jsonl")
    mixed = write(tmp_path / "m.jsonl", [{"text": "hello there"}, {"input_ids": [5]}])
    with pytest.raises(JsonlDataError, match="mixes text and token-id records"):
        JsonlDataset(mixed)


def test_gen_length_defaults_to_the_longest_record_except_for_text(tmp_path, words_tok):
    # token-id records of length 6: without --gen-length the model is for 6 ids, not EOS-padded
    # to a fixed 32 (a palindrome padded with 26 EOS is mostly padding to the sampler)
    ids = JsonlDataset(write(tmp_path / "i.jsonl", [{"input_ids": [1, 2, 3, 3, 2, 1]}, {"input_ids": [0, 4]}]))
    assert ids.gen_length == 6
    assert [e.completion for e in ids._examples] == [[5, 6, 7, 7, 6, 5], [4, 8, EOS_ID, EOS_ID, EOS_ID, EOS_ID]]
    pairs = JsonlDataset(write(tmp_path / "p.jsonl", [{"prompt_ids": [0], "completion_ids": [1, 2, 3]},
                                                      {"prompt_ids": [5, 6], "completion_ids": [4]}]))
    assert pairs.gen_length == 3 and pairs._examples[1].completion == [8, EOS_ID, EOS_ID]
    text = JsonlDataset(write(tmp_path / "t.jsonl", [{"text": "the cat sat"}]), tokenizer=words_tok)
    assert text.gen_length == DEFAULT_TEXT_GEN_LENGTH
    assert JsonlDataset(tmp_path / "i.jsonl", gen_length=4).gen_length == 4  # an explicit value wins: cut into 4s
