"""K=1 is exact sequential sampling; parallel K=L is the product of marginals (chi-square tests)."""

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

import adjust
from adjust.models.adapter import as_adapter
from adjust.models.toy import FiniteJointLM
from adjust.unmasking import SamplingSettings, filter_logits
from conftest import tiny_mdlm
from kernel_common import requires_triton

MASK = 3
N_SAMPLES = 20_000


def _probs(adapter, x):
    """Exact fp64 sampling distributions [L, V] at T=1 (mask token excluded)."""
    logits = adapter.logits(adapter.hidden(x[None]))[0].double()
    logits[:, MASK] = float("-inf")
    return torch.softmax(logits, -1)


def enumerate_k1_joint(adapter, prompt, n_new):
    """Chain-rule joint under the entropy rule: the next position is the masked one with max Σ p log p."""
    joint = {}

    def walk(x, p):
        masked = (x == MASK).nonzero().flatten()
        if len(masked) == 0:
            joint[tuple(x.tolist())] = joint.get(tuple(x.tolist()), 0.0) + p
            return
        probs = _probs(adapter, x)
        neg_ent = torch.special.xlogy(probs, probs).sum(-1)
        pos = masked[neg_ent[masked].argmax()]  # ties: lowest index, as the engine does
        for v in (probs[pos] > 0).nonzero().flatten().tolist():
            y = x.clone()
            y[pos] = v
            walk(y, p * probs[pos, v].item())

    walk(torch.tensor(prompt + [MASK] * n_new), 1.0)
    return joint


def product_of_marginals(adapter, prompt, n_new):
    x = torch.tensor(prompt + [MASK] * n_new)
    probs = _probs(adapter, x)[len(prompt):]
    joint = {}
    for combo in np.ndindex(*([probs.shape[1]] * n_new)):
        p = float(np.prod([probs[i, v].item() for i, v in enumerate(combo)]))
        if p > 0:
            joint[tuple(prompt) + combo] = p
    return joint


def chi2_pvalue(samples, joint):
    """Chi-square goodness of fit; cells with expected count < 5 are pooled into one."""
    n = len(samples)
    counts = Counter(samples)
    big = {s: p for s, p in joint.items() if p * n >= 5}
    obs = [counts.get(s, 0) for s in big]
    exp = [p * n for p in big.values()]
    rest_obs, rest_exp = n - sum(obs), n - sum(exp)
    if rest_exp >= 5:
        obs.append(rest_obs)
        exp.append(rest_exp)
    else:
        assert rest_obs <= max(10, 3 * rest_exp), "too many samples outside the support"
        exp = np.array(exp) * sum(obs) / sum(exp)
    return stats.chisquare(obs, exp).pvalue


def _samples(model, prompt, n_new, K, backend="torch", **settings):
    out = adjust.generate(model, [prompt] * N_SAMPLES, K=K, max_new_tokens=n_new, temperature=1.0, seed=1234,
                          backend=backend, **settings)
    return [tuple(r) for r in out.sequences.tolist()]


@pytest.fixture(scope="module")
def model():
    return tiny_mdlm(vocab_size=7, seed=3, sharpen=25.0)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_k1_matches_enumerated_chain_rule_joint(model, backend):
    prompt, n_new = [1], 3
    joint = enumerate_k1_joint(as_adapter(model), prompt, n_new)
    assert abs(sum(joint.values()) - 1) < 1e-9
    samples = _samples(model, prompt, n_new, K=1, backend=backend)
    assert chi2_pvalue(samples, joint) > 1e-3
    # The test has power: the same samples are far from the product of marginals.
    assert chi2_pvalue(samples, product_of_marginals(as_adapter(model), prompt, n_new)) < 1e-6


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_parallel_k_eq_l_matches_product_of_marginals(model, backend):
    prompt, n_new = [1], 3
    prod = product_of_marginals(as_adapter(model), prompt, n_new)
    samples = _samples(model, prompt, n_new, K=n_new, backend=backend)
    assert chi2_pvalue(samples, prod) > 1e-3
    assert chi2_pvalue(samples, enumerate_k1_joint(as_adapter(model), prompt, n_new)) < 1e-6


@pytest.mark.parametrize("backend", ["torch", "cpp", pytest.param("triton", marks=requires_triton)])
@pytest.mark.parametrize("filters", [{"top_k": 2}, {"top_p": 0.8}])
def test_parallel_with_top_p_top_k_matches_filtered_marginals(model, backend, filters):
    """Each position samples from Dream's filtered distribution (`filter_logits`), on every backend."""
    prompt, n_new = [1], 2
    ad = as_adapter(model)
    x = torch.tensor(prompt + [MASK] * n_new)
    with torch.no_grad():
        z = filter_logits(ad.logits(ad.hidden(x[None]))[0], SamplingSettings(1.0, **filters), MASK)[len(prompt):]
    probs = torch.softmax(z.double(), -1)
    assert ((probs > 0).sum(-1) < probs.shape[1] - 1).all()  # the filter removes tokens
    joint = {tuple(prompt) + c: float(probs[0, c[0]] * probs[1, c[1]])
             for c in np.ndindex(probs.shape[1], probs.shape[1]) if probs[0, c[0]] * probs[1, c[1]] > 0}
    samples = _samples(model, prompt, n_new, K=n_new, backend=backend, **filters)
    assert all(s in joint for s in samples)  # nothing outside the filtered support
    assert chi2_pvalue(samples, joint) > 1e-3
    assert chi2_pvalue(samples, product_of_marginals(ad, prompt, n_new)) < 1e-6  # the filter matters


def _two_sentences():
    vocab = ["[PAD]", "[BOS]", "[EOS]", "[MASK]"] + "the cat sat on mat dog ran in yard".split()
    ids = {w: i for i, w in enumerate(vocab)}
    s1 = [ids["[BOS]"]] + [ids[w] for w in "the cat sat on the mat".split()]
    s2 = [ids["[BOS]"]] + [ids[w] for w in "the dog ran in the yard".split()]
    return FiniteJointLM([s1, s2]), s1, s2, ids


def test_fig3_two_sentences_never_mix_with_k1_but_mix_in_parallel():
    model, s1, s2, ids = _two_sentences()
    prompt = [[ids["[BOS]"], ids["the"]]] * 400
    exact = adjust.generate(model, prompt, K=1, max_new_tokens=5, seed=0).sequences.tolist()
    assert all(r in (s1, s2) for r in exact)
    assert 0.35 < sum(r == s1 for r in exact) / len(exact) < 0.65
    par = adjust.generate(model, prompt, K=3, max_new_tokens=5, seed=0).sequences.tolist()
    mixed = sum(r not in (s1, s2) for r in par) / len(par)
    # step 1 commits the certain "the" and two uncertain words independently: mixing w.p. 1/2
    assert 0.4 < mixed < 0.6
