"""The AR judges of EDLM / APD: the exact HMM conditionals and the trained judge over left-padded batches."""

import numpy as np
import pytest
import torch

from adjust.data.synthetic import SMOOTHING, SYMBOL_OFFSET, HMMLanguage
from adjust.decoding.judge import judge_for_testbed, left_aligned
from adjust.eval.judge import Judge, JudgeConfig


def _padded(rows, pad=0):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    return ids, torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])


def test_hmm_judge_is_the_exact_smoothed_likelihood():
    lang = HMMLanguage()
    strings = lang.sample(6, seed=4).tolist()
    strings[1] = strings[1][:9]  # different lengths: left padding
    strings[2][3] = (strings[2][3] - SYMBOL_OFFSET + 1) % 32 + SYMBOL_OFFSET  # most likely an invalid string now
    ids, mask = _padded([[1] + s for s in strings])
    judge = lang.judge()
    want = [-lang.log_probs([s], SMOOTHING)[0] for s in strings]
    np.testing.assert_allclose(judge.sequence_nll(ids, mask).numpy(), want, rtol=1e-12)
    logits = judge.next_token_logits(ids, mask)
    real = (mask.cumsum(-1) > 1)
    total = torch.logsumexp(logits[real], -1)
    torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-9, rtol=0)  # normalised conditionals
    assert torch.isinf(logits[real][:, :SYMBOL_OFFSET]).all()  # only symbols are possible


def test_hmm_judge_gives_zero_probability_after_a_non_symbol():
    lang = HMMLanguage()
    s = lang.sample(1, seed=0)[0].tolist()
    ids, mask = _padded([[1] + s[:3] + [2] + s[3:6]])  # an EOS inside the string
    assert torch.isinf(lang.judge().sequence_nll(ids, mask)).all()


@pytest.fixture(scope="module")
def judge():
    torch.manual_seed(0)
    return Judge(JudgeConfig(vocab_size=12, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                             max_seq_len=16)).eval()


def test_judge_next_token_logits_ignore_left_padding(judge):
    rows = [[1, 5, 6, 7, 8], [1, 9], [1, 4, 10, 11]]
    ids, mask = _padded(rows)
    got = judge.next_token_logits(ids, mask)
    for b, r in enumerate(rows):
        alone = judge(torch.tensor([r]))[0]  # position j predicts token j + 1
        start = ids.shape[1] - len(r)
        torch.testing.assert_close(got[b, start + 1 :], alone[:-1])
        assert (got[b, : start + 1] == 0).all()
    nll = judge.sequence_nll(ids, mask)
    for b, r in enumerate(rows):
        logp = torch.log_softmax(judge(torch.tensor([r]))[0].double(), -1)
        torch.testing.assert_close(nll[b], -logp[torch.arange(len(r) - 1), r[1:]].sum(), rtol=1e-5, atol=1e-5)


def test_judge_reads_mask_tokens_as_padding_after_the_read_positions(judge):
    ids, mask = _padded([[1, 5, 6, 3, 3]])
    clean, _ = _padded([[1, 5, 6, 0, 0]])
    torch.testing.assert_close(judge.next_token_logits(ids, mask), judge.next_token_logits(clean, mask))


def test_left_aligned_moves_real_tokens_first():
    ids, mask = _padded([[1, 2, 3], [4]], pad=0)
    out, shift = left_aligned(ids, mask, fill=9)
    assert out.tolist() == [[1, 2, 3], [4, 9, 9]] and shift.tolist() == [0, 2]


def test_judge_for_testbed_names_the_shipped_judges():
    assert type(judge_for_testbed("synthetic")).__name__ == "HMMJudge"
    assert isinstance(judge_for_testbed("text"), Judge)
    with pytest.raises(ValueError, match="no shipped judge"):
        judge_for_testbed("my.jsonl")
