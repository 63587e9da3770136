"""Context-cached sampler passes (adjust.context_cache): the reference identity, exactness when every row
is a candidate, the fused loop against the engine, and bad arguments."""

from __future__ import annotations

import pytest
import torch

import adjust
from adjust.context_cache import ContextCache
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from conftest import perturbed_sampler, tiny_mdlm
from kernel_common import requires_triton


def _state(model, seed: int):
    """3 rows, L = 11, row 0 left-padded; random hidden states h1 ≠ h0; a partial candidate set per row."""
    ad = as_adapter(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, ad.vocab_size, (3, 11), generator=g)
    attn = torch.ones(3, 11, dtype=torch.long)
    attn[0, :2], x[0, :2] = 0, ad.pad_token_id
    cand = torch.zeros(3, 11, dtype=torch.bool)
    cand[0, [4, 7, 9]] = True
    cand[1, [0, 10]] = True  # position 0 a candidate: padding slots must not collide with it
    cand[2, 5] = True
    with torch.no_grad():
        h0 = ad.hidden(x, attn)
    h1 = h0 + 0.3 * torch.randn(h0.shape, generator=g).to(h0.dtype)
    return ad, x, attn, cand, h0, h1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_cached_pass_is_g_on_frozen_context(dtype, kv_heads):
    """For candidate rows: g(where(candidate, h, h0), x); other rows come back unchanged."""
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0, num_kv_heads=kv_heads).to(dtype)
    g = perturbed_sampler(model)
    ad, x, attn, cand, h0, h1 = _state(model, seed=kv_heads)
    with torch.no_grad():
        got = ContextCache(g, ad, h0, x, attn, cand)(h1, x)
        want = g(torch.where(cand[..., None], h1, h0), x, ad, attn)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got[cand], want[cand], rtol=tol, atol=tol)
    assert torch.equal(got[~cand], h1[~cand])
    assert not torch.allclose(want[cand], g(h1, x, ad, attn)[cand])  # the frozen context matters


def test_every_row_a_candidate_is_exact_g():
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0).double()
    g = perturbed_sampler(model)
    ad, x, attn, _, h0, h1 = _state(model, seed=5)
    every = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(ContextCache(g, ad, h0, x, attn, every)(h1, x), g(h1, x, ad, attn),
                                   rtol=1e-12, atol=1e-12)


def test_generate_with_cache_context_counts_and_differs_only_by_the_approximation():
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    g = perturbed_sampler(model)
    prompts = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 3, 12]]  # left padding, a mask inside a prompt
    kw = dict(K=3, sampler=g, max_new_tokens=8, block_length=4, temperature=0.0)
    cached = adjust.generate(model, prompts, cache_context=True, **kw)
    exact = adjust.generate(model, prompts, **kw)
    assert cached.base_forwards == exact.base_forwards and cached.sampler_passes == exact.sampler_passes
    assert ((cached.sequences != as_adapter(model).mask_token_id) | (cached.attention_mask == 0)).all()
    assert torch.equal(cached.sequences[:, :5], exact.sequences[:, :5])  # the prompts are kept


@requires_triton
@pytest.mark.parametrize("alg", ["entropy", "margin"])
def test_fused_loop_with_cache_context_equals_engine_at_t0(alg):
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    g = perturbed_sampler(model, seed=1)
    prompts = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 3, 12]]
    kw = dict(K=3, sampler=g, max_new_tokens=8, block_length=4, temperature=0.0, alg=alg, cache_context=True)
    torch_ = adjust.generate(model, prompts, **kw)
    fused = adjust.generate(model, prompts, backend="triton", **kw)
    assert torch.equal(torch_.sequences, fused.sequences) and torch.equal(torch_.commit_pass, fused.commit_pass)


@requires_triton
def test_both_approximations_together_fused_equals_engine_at_t0():
    """cache_context and candidate_tokens compose: the fused loop with both = the torch engine with both."""
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    g = perturbed_sampler(model, seed=2)
    prompts = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 3, 12]]
    kw = dict(K=3, sampler=g, max_new_tokens=8, block_length=4, temperature=0.0, cache_context=True, candidate_tokens=6)
    torch_ = adjust.generate(model, prompts, **kw)
    fused = adjust.generate(model, prompts, backend="triton", **kw)
    assert torch.equal(torch_.sequences, fused.sequences) and torch.equal(torch_.commit_pass, fused.commit_pass)


def test_bad_cache_context_is_refused():
    model = tiny_mdlm(vocab_size=12)
    with pytest.raises(ValueError, match="cache_context"):
        adjust.generate(model, K=2, max_new_tokens=3, cache_context=True)  # no sampler
    with pytest.raises(TypeError, match="cache_context"):
        adjust.generate(model, K=2, sampler=AdjustSampler.from_base(model), max_new_tokens=3, cache_context="yes")
