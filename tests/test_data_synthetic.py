"""The synthetic HMM language: exact likelihood, sampler, validity structure."""

import hashlib
import itertools
import json
import math

import numpy as np
import pytest

from adjust.data import EOS_ID, MASK_ID, HMMLanguage, testbed
from adjust.data.synthetic import N_STATES, N_SYMBOLS, SYMBOL_OFFSET, _build_hmm


@pytest.fixture(scope="module")
def hmm() -> HMMLanguage:
    return HMMLanguage()


def brute_force_log_prob(hmm: HMMLanguage, ids: list[int]) -> float:
    """log Σ over every hidden path of P(path, ids)."""
    sym = [i - SYMBOL_OFFSET for i in ids]
    total = 0.0
    for path in itertools.product(range(N_STATES), repeat=len(sym)):
        p = hmm.initial[path[0]] * hmm.emission[path[0], sym[0]]
        for t in range(1, len(sym)):
            p *= hmm.transition[path[t - 1], path[t]] * hmm.emission[path[t], sym[t]]
        total += p
    return math.log(total) if total > 0 else -math.inf


def test_language_is_a_fixed_constant():
    weights = json.dumps([w.tolist() for w in _build_hmm()])
    assert hashlib.sha256(weights.encode()).hexdigest() == (
        "5fbfeb5b2a46da0e81dcfa5a55cdeac6614334ec1d634e627d6d6aa5a6bece4b"
    ), "the synthetic language changed: models trained on it no longer match"


def test_structure_is_sparse_and_overlapping(hmm):
    emits = (hmm.emission > 0).sum(1)
    succs = (hmm.transition > 0).sum(1)
    emitters = (hmm.emission > 0).sum(0)
    assert emits.min() >= 2 and emits.max() <= 4
    assert succs.min() >= 2 and succs.max() <= 3
    assert emitters.min() >= 1 and emitters.max() >= 2  # every symbol reachable, some shared
    for m in (hmm.initial[None], hmm.transition, hmm.emission):
        np.testing.assert_allclose(m.sum(-1), 1.0)
    assert hmm.tokenizer.get_vocab_size() == SYMBOL_OFFSET + N_SYMBOLS
    assert hmm.tokenizer.token_to_id("a0") == SYMBOL_OFFSET


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_log_prob_equals_brute_force(hmm, length):
    rng = np.random.default_rng(length)
    strings = hmm.sample(6, seed=length, length=length).tolist()
    strings += rng.integers(SYMBOL_OFFSET, SYMBOL_OFFSET + N_SYMBOLS, (6, length)).tolist()
    n_invalid = 0
    for ids in strings:
        got, want = hmm.log_prob(ids), brute_force_log_prob(hmm, ids)
        if want == -math.inf:
            n_invalid += 1
            assert got == -math.inf
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    if length >= 3:
        assert n_invalid > 0  # the comparison covered impossible strings too


@pytest.mark.parametrize("smoothing", [0.0, 0.01])
def test_probabilities_of_all_length3_strings_sum_to_one(hmm, smoothing):
    all_strings = np.array(list(itertools.product(range(N_SYMBOLS), repeat=3))) + SYMBOL_OFFSET
    lp = hmm.log_probs(all_strings, smoothing=smoothing)
    assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-12)
    if smoothing:
        assert np.isfinite(lp).all()
    else:
        assert np.isinf(lp).mean() > 0.5  # most strings are impossible


def test_sampler_matches_exact_distribution(hmm):
    samples = hmm.sample(40_000, seed=3, length=2) - SYMBOL_OFFSET
    empirical = np.bincount(samples[:, 0] * N_SYMBOLS + samples[:, 1], minlength=N_SYMBOLS**2) / len(samples)
    pairs = np.array(list(itertools.product(range(N_SYMBOLS), repeat=2))) + SYMBOL_OFFSET
    exact = np.exp(hmm.log_probs(pairs))
    assert empirical[exact == 0].sum() == 0
    assert 0.5 * np.abs(empirical - exact).sum() < 0.03  # total variation


def test_samples_are_valid_deterministic_and_seeded(hmm):
    a = hmm.sample(2000, seed=0)
    assert a.shape == (2000, 16)
    assert np.isfinite(hmm.log_probs(a)).all()
    np.testing.assert_array_equal(a, hmm.sample(2000, seed=0))
    assert (a != hmm.sample(2000, seed=1)).any()


def test_uniformly_random_strings_are_invalid(hmm):
    rng = np.random.default_rng(0)
    strings = rng.integers(SYMBOL_OFFSET, SYMBOL_OFFSET + N_SYMBOLS, (2000, 16))
    assert np.isfinite(hmm.log_probs(strings)).mean() < 0.005


def test_score(hmm):
    prompt = hmm.prompts(1, seed=0)[0]
    good = hmm.sample(1, seed=5)[0].tolist()
    s = hmm.score(prompt, good)
    assert s["valid"] == 1.0 and math.isfinite(s["nll"])
    assert s["nll"] == pytest.approx(-hmm.log_prob(good) / 16)
    assert s["nll_smoothed"] >= s["nll"] - 0.2  # smoothing only moves mass to invalid strings

    masked = good[:-1] + [MASK_ID]
    assert hmm.score(prompt, masked)["valid"] == 0.0 and hmm.score(prompt, masked)["nll"] == math.inf
    assert hmm.score(prompt, good[:-1] + [EOS_ID])["valid"] == 0.0

    rng = np.random.default_rng(1)
    while hmm.log_prob(bad := rng.integers(SYMBOL_OFFSET, SYMBOL_OFFSET + N_SYMBOLS, 16).tolist()) > -math.inf:
        pass
    s_bad = hmm.score(prompt, bad)
    assert s_bad["valid"] == 0.0 and math.isfinite(s_bad["nll_smoothed"])
    assert s_bad["nll_smoothed"] > s["nll_smoothed"]


def test_testbed_protocol(hmm):
    assert isinstance(hmm, testbed.Testbed)
    ex = HMMLanguage(gen_length=10).examples(5, seed=0)
    assert all(e.prompt == [] and len(e.completion) == 10 for e in ex)
    assert all(isinstance(i, int) for i in ex[0].completion)
    assert all(p.ids == [] for p in hmm.prompts(3, seed=0))
