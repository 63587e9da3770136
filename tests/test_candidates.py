"""Candidate-restricted ADJUST vs its reference (full logits masked to the kept set) and vs exact ADJUST."""

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

import adjust
from adjust.candidates import keep_top_ids, restricted_logits
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from conftest import perturbed_sampler, tiny_mdlm
from kernel_common import requires_triton

MASK = 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_restricted_logits_equal_the_full_logits_at_the_kept_ids(dtype):
    torch.manual_seed(1)
    model = tiny_mdlm(vocab_size=37).to(dtype)
    ad = as_adapter(model)
    h = torch.randn(11, 32, dtype=dtype)
    full = ad.logits(h)
    ids = keep_top_ids(full, 5, MASK)
    assert ids.shape == (11, 5) and bool((ids != MASK).all())
    assert bool((ids[:, 1:] > ids[:, :-1]).all())  # ascending
    top = full.clone()
    top[:, MASK] = float("-inf")
    assert torch.equal(ids, top.topk(5, -1).indices.sort(-1).values)
    torch.testing.assert_close(restricted_logits(ad, h, ids, MASK), full.gather(1, ids))


@pytest.mark.parametrize("T", [0.0, 1.0])
def test_keeping_the_whole_vocabulary_is_exact_adjust(T):
    model = tiny_mdlm(vocab_size=13, sharpen=2.0, mix=3.0)
    sampler = perturbed_sampler(model)
    prompts = [[1], [1, 5, 6], [1, 7]]  # batch 3, left padding
    kw = dict(K=3, sampler=sampler, max_new_tokens=7, temperature=T, seed=4)
    exact = adjust.generate(model, prompts, **kw)
    restricted = adjust.generate(model, prompts, candidate_tokens=13, **kw)
    assert torch.equal(exact.sequences, restricted.sequences)
    assert restricted.sampler_passes == exact.sampler_passes > 0


def test_sampled_tokens_stay_in_the_kept_set():
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    sampler = perturbed_sampler(model)
    out = adjust.generate(model, batch_size=6, K=4, sampler=sampler, max_new_tokens=9, candidate_tokens=3, seed=0,
                          return_history=True)
    assert any(r.pass_index > 0 and any(r.positions) for r in out.history)
    # replay: the kept set of a position is its top-3 base ids at the base forward before its commit
    x = torch.full((6, 10), MASK)
    x[:, 0] = 1
    ad = as_adapter(model)
    for rec in out.history:
        if rec.pass_index == 0:
            kept = keep_top_ids(ad.logits(ad.hidden(x, None)).flatten(0, 1), 3, MASK).view(6, 10, 3)
        for b, (pos, tok) in enumerate(zip(rec.positions, rec.tokens)):
            for p, t in zip(pos, tok):
                if rec.pass_index > 0:  # pass 0 samples the full vocabulary
                    assert t in kept[b, p].tolist()
                x[b, p] = t
    assert torch.equal(x, out.sequences)


@torch.no_grad()
def test_restricted_sampling_matches_its_reference_distribution():
    """A sampler pass draws from softmax(W·h) restricted to the kept ids: chi-square on many draws."""
    model = tiny_mdlm(vocab_size=10, sharpen=2.0, mix=3.0)
    sampler = perturbed_sampler(model, seed=2)
    n = 6000
    out = adjust.generate(model, batch_size=n, K=2, sampler=sampler, max_new_tokens=2, candidate_tokens=4, seed=9,
                          return_history=True, alg="random")
    ad = as_adapter(model)
    x0 = torch.tensor([[1, MASK, MASK]])
    h0 = ad.hidden(x0, None)
    kept = keep_top_ids(ad.logits(h0[0]), 4, MASK)
    # condition on the first pass committing token t at position 1; the second pass samples position 2
    first = out.history[0]
    commits = Counter((tuple(p), tok[0]) for p, tok in zip(first.positions, first.tokens))
    (pos, t), _ = max(((k, c) for k, c in commits.items() if k[0] == (1,)), key=lambda kc: kc[1])
    rows = [b for b in range(n) if first.positions[b] == [1] and first.tokens[b][0] == t]
    assert len(rows) > 250
    x1 = x0.clone()
    x1[0, 1] = t
    h1 = sampler(h0, x1, ad, None)
    ref = torch.full((10,), float("-inf"))
    ref[kept[2]] = ad.logits(h1[0, 2])[kept[2]]
    ref[MASK] = float("-inf")
    p = torch.softmax(ref.double(), -1)
    got = torch.bincount(out.sequences[rows, 2], minlength=10).double()
    assert got[p == 0].sum() == 0
    keep = p > 0
    assert chisquare(got[keep].numpy(), (p[keep] / p[keep].sum() * got.sum()).numpy()).pvalue > 1e-3


@requires_triton
@pytest.mark.parametrize("T", [0.0, 1.0])
def test_triton_backend_restricts_like_the_torch_backend(T):
    """The fused loop's restricted passes (adjust_kernels.AdjustLoop, candidate_tokens): at T = 0 the torch
    backend's tokens; at T = 1 sampled tokens of passes k ≥ 1 in the kept set (replayed as above)."""
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    sampler = perturbed_sampler(model)
    prompts = [[1], [1, 5, 6], [1, 7]]  # batch 3, left padding
    kw = dict(K=3, sampler=sampler, max_new_tokens=7, temperature=T, seed=4, candidate_tokens=5)
    fused = adjust.generate(model, prompts, backend="triton", return_history=True, **kw)
    if T == 0.0:
        torch_ = adjust.generate(model, prompts, backend="torch", **kw)
        assert torch.equal(fused.sequences, torch_.sequences) and torch.equal(fused.commit_pass, torch_.commit_pass)
    ad = as_adapter(model)
    x = fused.sequences.clone()
    x[fused.commit_pass >= 0] = MASK  # the start: prompts (left-padded), then masks
    for rec in fused.history:
        if rec.pass_index == 0:
            kept = keep_top_ids(ad.logits(ad.hidden(x, fused.attention_mask)).flatten(0, 1), 5, MASK).view(*x.shape, 5)
        for b, (pos, tok) in enumerate(zip(rec.positions, rec.tokens)):
            for p, t in zip(pos, tok):
                if rec.pass_index > 0:
                    assert t in kept[b, p].tolist()
                x[b, p] = t
    assert torch.equal(x, fused.sequences)
    assert adjust.generate(model, prompts, backend="auto", **kw).sampler_passes > 0  # auto: torch here, triton on CUDA


def test_bad_candidate_tokens_are_refused():
    model = tiny_mdlm(vocab_size=12)
    sampler = AdjustSampler.from_base(model)
    with pytest.raises(ValueError, match="candidate_tokens"):
        adjust.generate(model, K=2, sampler=sampler, max_new_tokens=3, candidate_tokens=0)
    with pytest.raises(ValueError, match="candidate_tokens"):
        adjust.generate(model, K=2, max_new_tokens=3, candidate_tokens=4)  # no sampler
    with pytest.raises(ValueError, match="candidate_tokens"):
        adjust.generate(model, K=2, sampler=sampler, max_new_tokens=3, candidate_tokens=4, backend="cpp")
