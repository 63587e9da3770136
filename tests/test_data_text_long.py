"""The long-prompt text testbed (``text-long``): held-out prompts, their true continuations, the match score."""

import pytest

from adjust.data import decode, get_testbed
from adjust.data.text_long import TextContinuation


@pytest.fixture(scope="module")
def testbed() -> TextContinuation:
    return get_testbed("text-long")


def test_prompts_are_held_out_window_starts_with_their_continuations(testbed):
    assert testbed.name == "text-long" and (testbed.prompt_length, testbed.gen_length) == (24, 8)
    held = "\n".join(testbed.paragraphs["heldout"])
    prompts = testbed.prompts(40, seed=3)
    assert [p.ids for p in prompts] == [p.ids for p in testbed.prompts(40, seed=3)]
    assert [p.ids for p in prompts] != [p.ids for p in testbed.prompts(40, seed=4)]
    for p in prompts:
        assert len(p.ids) == 24 and len(p.meta["continuation"]) == 8
        assert decode(testbed.tokenizer, p.ids + p.meta["continuation"]) in held


def test_examples_split_train_windows(testbed):
    train = "\n".join(testbed.paragraphs["train"])
    for e in testbed.examples(20, seed=1):
        assert len(e.prompt) == 24 and len(e.completion) == 8
        assert decode(testbed.tokenizer, e.prompt + e.completion) in train


def test_match_is_the_share_of_true_continuation_tokens(testbed):
    p = testbed.prompts(1, seed=0)[0]
    truth = p.meta["continuation"]
    assert testbed.score(p, truth) == {"match": 1.0}
    wrong = [t + 1 if i % 4 == 0 else t for i, t in enumerate(truth)]  # 2 of 8 positions changed
    assert testbed.score(p, wrong) == {"match": 0.75}


def test_other_splits_and_bad_lengths():
    tb = TextContinuation(prompt_length=5, gen_length=3)
    assert all(len(p.ids) == 5 and len(p.meta["continuation"]) == 3 for p in tb.prompts(5, seed=0))
    with pytest.raises(ValueError, match="prompt_length"):
        TextContinuation(prompt_length=0)
