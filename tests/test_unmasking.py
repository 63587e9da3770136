"""Dream's sampling order and the position scores, checked against independent computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from adjust.unmasking import SamplingSettings, filter_logits, sample_tokens, select_positions

MASK = 3


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.3, 0.0001, 0.2, 0.0499]]))
    z = filter_logits(logits, SamplingSettings(temperature=1.0, top_p=0.75), None)
    kept = torch.isfinite(z[0]).nonzero().flatten().tolist()
    assert kept == [1, 2, 4]  # 0.4 + 0.3 < 0.75, adding 0.2 crosses it and is kept


def test_top_k_then_temperature_order():
    logits = torch.tensor([[1.0, 4.0, 3.0, -5.0, 2.0]])
    z = filter_logits(logits, SamplingSettings(temperature=0.5, top_k=2), None)
    assert torch.isfinite(z[0]).nonzero().flatten().tolist() == [1, 2]
    assert z[0, 1].item() == pytest.approx(8.0)


@pytest.mark.parametrize("top_p,top_k", [(0.6, None), (None, 2), (0.9, 3)])
def test_sampled_tokens_stay_in_the_filtered_set(top_p, top_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 11, generator=g) * 2
    s = SamplingSettings(temperature=1.3, top_p=top_p, top_k=top_k)
    allowed = torch.isfinite(filter_logits(logits, s, MASK))
    tokens, _, _ = sample_tokens(logits, s, MASK, g)
    assert allowed.gather(1, tokens[:, None]).all()
    assert (tokens != MASK).all()


def test_mask_token_never_sampled_even_when_it_dominates():
    logits = torch.zeros(2000, 6)
    logits[:, MASK] = 50.0
    for T in (0.0, 1.0):
        tokens, _, _ = sample_tokens(logits, SamplingSettings(temperature=T), MASK, torch.Generator().manual_seed(1))
        assert (tokens != MASK).all()


def test_scores_match_definitions():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(7, 13, generator=g)
    p = F.softmax(logits.double(), -1)
    ent = torch.distributions.Categorical(probs=p).entropy()
    tok, s, lq = sample_tokens(logits, SamplingSettings(temperature=0.0, alg="entropy"), None, g)
    assert torch.equal(tok, p.argmax(-1))
    assert torch.allclose(s.double(), -ent, atol=1e-5)
    assert (lq == 0).all()
    _, s, _ = sample_tokens(logits, SamplingSettings(temperature=0.0, alg="confidence"), None, g)
    assert torch.allclose(s.double(), p.max(-1).values, atol=1e-6)
    _, s, _ = sample_tokens(logits, SamplingSettings(temperature=0.0, alg="margin"), None, g)
    top = p.topk(2, -1).values
    assert torch.allclose(s.double(), top[:, 0] - top[:, 1], atol=1e-6)
    # LLaDA: confidence under the *untempered* softmax, even when sampling at T=2
    tok, s, lq = sample_tokens(logits, SamplingSettings(temperature=2.0, alg="low_confidence"), None, g)
    assert torch.allclose(s.double(), p.gather(1, tok[:, None]).squeeze(1), atol=1e-6)
    q = F.log_softmax(logits.double() / 2.0, -1).gather(1, tok[:, None]).squeeze(1)
    assert torch.allclose(lq.double(), q, atol=1e-5)


def test_select_positions_top_n_per_row_and_stable_ties():
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1], [1.0, 2.0, 3.0, 4.0]])
    cand = torch.tensor([[True, True, True, True], [True, False, True, True]])
    out = select_positions(scores, cand, torch.tensor([2, 1]))
    assert out.tolist() == [[False, True, True, False], [False, False, False, True]]
    out = select_positions(scores, cand, torch.tensor([1, 3]))
    assert out.tolist() == [[False, True, False, False], [True, False, True, True]]


def test_alg_temp_samples_positions_from_softmax_of_scores():
    scores = torch.tensor([[0.0, math.log(3.0), float("nan")]]).repeat(20000, 1)
    cand = torch.tensor([[True, True, False]]).repeat(20000, 1)
    out = select_positions(scores, cand, torch.ones(20000, dtype=torch.long), 1.0, torch.Generator().manual_seed(0))
    frac = out[:, 1].float().mean().item()
    assert abs(frac - 0.75) < 0.015  # softmax([0, log 3]) = [0.25, 0.75]
    assert not out[:, 2].any()
