"""The base-model block cache on the REAL Dream and LLaDA classes (tiny random weights, tests/peer_models.py):
the windowed forward equals the model's own full forward, the cache holds the model's own keys/values at a
refresh, refreshing every forward gives the uncached tokens (prefix and dual, left-padded batches), and the
sampler's first pass is unchanged by following the window."""

from __future__ import annotations

import pytest
import torch

import adjust
from adjust.decoding import Threshold
from adjust.models.adapter import as_adapter
from adjust.sampler_block_cache import SamplerBlockCache
from peer_models import tiny_dream, tiny_llada
from test_sampler_block_cache import g_over_every_row

PROMPTS = [[10, 11, 12, 13, 14, 15, 16], [20, 21], [30, 31, 32, 33]]  # left padding; the special ids are ≥ 95


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


MODELS = {
    "dream": lambda: tiny_dream(),
    "llada": lambda: tiny_llada(),
    "llada-qk-norm": lambda: tiny_llada(attention_layer_norm=True, rope_full_precision=False),
    "llada-groups": lambda: tiny_llada(block_group_size=2, input_emb_norm=True),
    "llada-tied": lambda: tiny_llada(weight_tying=True),
}


def _batch(B: int, L: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, 90, (B, L), generator=g)
    attn = torch.ones(B, L, dtype=torch.long)
    attn[1, :3], attn[2, :6] = 0, 0
    return x, attn


@pytest.mark.parametrize("name", list(MODELS))
def test_window_forward_equals_the_models_own_forward(name):
    ad = as_adapter(MODELS[name]())
    x, attn = _batch(3, 21, seed=1)
    for mask in (attn, None):
        own = ad.hidden(x, mask)  # the model's own forward
        for start, end in ((8, 13), (0, 4), (13, 21), (0, 21), (1, 2)):
            h, cache = ad.hidden_and_cache(x, mask)
            torch.testing.assert_close(h, own, rtol=0, atol=0)  # the block's full forward is the model's own
            torch.testing.assert_close(ad.hidden_window(x, mask, cache, start, end), own[:, start:end],
                                       rtol=1e-5, atol=1e-5)


def test_dream_cache_holds_dreams_own_keys_and_values():
    """Dream's own forward with a transformers DynamicCache (use_cache=True) is the reference."""
    from transformers.cache_utils import DynamicCache

    model = tiny_dream()
    ad = as_adapter(model)
    x, attn = _batch(3, 15, seed=2)
    _, cache = ad.hidden_and_cache(x, attn)
    own = DynamicCache()
    mask = attn.bool()[:, None, None, :].expand(3, 1, 15, 15)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    model.model(input_ids=x, attention_mask=mask, position_ids=pos, past_key_values=own, use_cache=True)
    for layer in range(len(cache.keys)):
        k, v = own[layer]
        torch.testing.assert_close(cache.keys[layer], k, rtol=0, atol=0)
        torch.testing.assert_close(cache.values[layer], v, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["llada", "llada-qk-norm"])
def test_llada_cache_from_its_forward_equals_the_submodule_path(name):
    """The cache read from LLaDA's own forward (hooks) and the keys/values the adapter's own block code
    writes for a window of every row agree."""
    ad = as_adapter(MODELS[name]())
    x, attn = _batch(3, 15, seed=3)
    _, hooked = ad.hidden_and_cache(x, attn)
    want = ([k.clone() for k in hooked.keys], [v.clone() for v in hooked.values])
    ad.hidden_window(x, attn, hooked, 0, 15)  # overwrites every row with the submodule path's keys/values
    for got, ref in zip(hooked.keys + hooked.values, want[0] + want[1]):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def _policies(ad, schedule: str):
    sampler = adjust.AdjustSampler.from_base(ad)
    g = torch.Generator().manual_seed(0)
    for p in sampler.parameters():  # away from the parallel-baseline init, so the passes matter
        p.add_(0.2 * torch.randn(p.shape, generator=g))
    return {"parallel": dict(K=2), "adjust": dict(K=3, sampler=sampler),
            "threshold": dict(decoding=Threshold(0.5), alg="confidence"),
            "own_schedule": dict(K=2, schedule=schedule, sample_mask=True)}  # the model's own generate's sampling


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("name", ["dream", "llada"])
def test_refresh_every_forward_gives_the_uncached_tokens(name, mode):
    ad = as_adapter(MODELS[name]())
    for policy, kw in _policies(ad, name).items():
        kw = dict(max_new_tokens=12, block_length=4, temperature=0.0, **kw)
        want = adjust.generate(ad, PROMPTS, **kw)
        got = adjust.generate(ad, PROMPTS, base_cache=mode, base_cache_refresh="forward", **kw)
        assert torch.equal(got.sequences, want.sequences), policy
        assert torch.equal(got.commit_pass, want.commit_pass), policy
        assert got.cached_forwards == want.base_forwards - 3 > 0


def test_llada_without_llama_blocks_is_refused():
    ad = as_adapter(tiny_llada(block_type="sequential"))
    assert not ad.supports_base_cache
    with pytest.raises(ValueError, match="no cached forward"):
        adjust.generate(ad, PROMPTS, K=2, max_new_tokens=4, block_length=2, base_cache="dual")
    with pytest.raises(ValueError, match="Llama blocks"):
        ad.hidden_and_cache(torch.tensor([[10, 11]]))



@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("name", ["dream", "llada"])
def test_sampler_passes_follow_the_window(name, mode, monkeypatch):
    """With the default refresh, ADJUST K = 2's only pass is unchanged by caching g (adjust.sampler_block_cache:
    its recorded keys/values are what g computes again); at K = 4 passes 2 and 3 run on the window and are
    an approximation like the base's cached positions."""
    ad = as_adapter(MODELS[name]())
    sampler = _policies(ad, name)["adjust"]["sampler"]
    kw = dict(max_new_tokens=16, block_length=8, temperature=0.0, sampler=sampler, base_cache=mode)
    cached = {K: adjust.generate(ad, PROMPTS, K=K, **kw) for K in (2, 4)}
    monkeypatch.setattr(SamplerBlockCache, "__call__", g_over_every_row)
    for K in (2, 4):
        full = adjust.generate(ad, PROMPTS, K=K, **kw)
        assert full.sampler_passes == cached[K].sampler_passes
        if K == 2:
            assert torch.equal(cached[K].sequences, full.sequences)
            assert torch.equal(cached[K].commit_pass, full.commit_pass)
