"""The base-model block cache (adjust.base_cache, adjust.models.kv_cache) on MaskedDiffusionLM: the windowed
forward equals the full forward's rows, the cache holds the full forward's keys/values at every refresh,
refreshing every forward gives the uncached tokens for every decoding policy and backend, the default
refresh is an approximation, and bad settings are refused. Dream and LLaDA: tests/test_base_cache_hf.py."""

from __future__ import annotations

import pytest
import torch

import adjust
from adjust.base_cache import BaseForward
from adjust.decoding import APD, AdaptiveAdjust, EntropyBound, Threshold
from adjust.models.adapter import as_adapter
from adjust.models.kv_cache import BlockKVCache
from adjust.models.layers import position_ids_from_mask, rope_cos_sin
from adjust.models.toy import FiniteJointLM
from conftest import perturbed_sampler, tiny_mdlm
from kernel_common import requires_triton
from test_decoding_policies import FavouriteTokenJudge

PROMPTS = [[1, 5, 6, 7, 8, 9, 10], [1, 4], [1, 11, 4, 6]]  # left padding: 5 and 3 pad slots
GEN = dict(max_new_tokens=12, block_length=4)  # 3 blocks


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def models():
    """The decoding-policy tests' model (several commits per forward at their τ / γ) and a sampler for it."""
    model = tiny_mdlm(vocab_size=12, seed=1, sharpen=16.0, mix=10.0)
    return model, perturbed_sampler(model, seed=1)


@pytest.fixture(scope="module")
def model(models):
    return models[0]


@pytest.fixture(scope="module")
def sampler(models):
    return models[1]


def _padded_batch(ad, B: int, L: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, ad.vocab_size, (B, L), generator=g)
    attn = torch.ones(B, L, dtype=torch.long)
    for b in range(1, B):
        attn[b, : 2 * b + 1] = 0
    return x.masked_fill(attn == 0, ad.pad_token_id), attn


def _reference_kv(model, x, attn):
    """Each layer's keys/values, layer by layer from the model's own modules (no cache involved)."""
    pos = position_ids_from_mask(attn)
    h = model.embed_tokens(x)
    cos, sin = rope_cos_sin(pos, model.config.head_dim, model.config.rope_theta, h.dtype)
    out = []
    for layer in model.layers:
        _, k, v = layer.self_attn.project(layer.input_layernorm(h), cos, sin)
        out.append((k, v))
        h = layer(h, cos, sin, attn.bool())
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_window_forward_equals_the_full_forward_rows(dtype, kv_heads):
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0, num_kv_heads=kv_heads, num_layers=3).to(dtype)
    ad = as_adapter(model)
    x, attn = _padded_batch(ad, 3, 19, seed=kv_heads)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for mask in (attn, None):
        full = ad.hidden(x, mask)
        for start, end in ((7, 12), (0, 5), (12, 19), (0, 19), (18, 19)):
            h, cache = ad.hidden_and_cache(x, mask)
            assert torch.equal(h, full)
            torch.testing.assert_close(ad.hidden_window(x, mask, cache, start, end), full[:, start:end],
                                       rtol=tol, atol=tol)


def test_cache_holds_every_layers_keys_and_values():
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0, num_layers=3)
    ad = as_adapter(model)
    x, attn = _padded_batch(ad, 3, 13, seed=4)
    _, cache = ad.hidden_and_cache(x, attn)
    want = _reference_kv(model, x, attn)
    assert len(cache.keys) == len(want) == 3 and cache.seq_len == 13
    for (k, v), ck, cv in zip(want, cache.keys, cache.values):
        torch.testing.assert_close(ck, k, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(cv, v, rtol=1e-6, atol=1e-6)


def test_window_writes_its_keys_and_values_and_keeps_the_rest():
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    ad = as_adapter(model)
    x, attn = _padded_batch(ad, 2, 11, seed=2)
    _, cache = ad.hidden_and_cache(x, attn)
    before = [k.clone() for k in cache.keys]
    y = x.clone()
    y[:, 4:8] = torch.randint(4, 29, (2, 4), generator=torch.Generator().manual_seed(0))
    ad.hidden_window(y, attn, cache, 4, 8)
    fresh = _reference_kv(model, y, attn)
    for i, k in enumerate(cache.keys):
        assert torch.equal(k[:, :, :4], before[i][:, :, :4]) and torch.equal(k[:, :, 8:], before[i][:, :, 8:])
        if i == 0:  # layer 0's keys of the window depend only on the window's own tokens
            torch.testing.assert_close(k[:, :, 4:8], fresh[0][0][:, :, 4:8], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(cache.keys[0][:, :, 4:8], before[0][:, :, 4:8])


def test_block_kv_cache_refuses_misuse():
    cache = BlockKVCache()
    with pytest.raises(RuntimeError, match="no full forward"):
        cache.set_window(0, 1)
    k = torch.zeros(1, 1, 5, 2)
    cache.update(k, k, 0)
    with pytest.raises(RuntimeError, match="out of order"):
        cache.update(k, k, 2)
    with pytest.raises(ValueError, match="not inside"):
        cache.set_window(3, 6)
    cache.set_window(1, 3)
    with pytest.raises(ValueError, match="rows given"):
        cache.update(k, k, 0)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_sampler_sees_fresh_window_rows_and_the_blocks_full_forward_elsewhere(model, mode):
    """What the policies and the ADJUST sampler get from a cached forward."""
    ad = as_adapter(model)
    x, attn = _padded_batch(ad, 3, 16, seed=3)
    x[:, 8:] = ad.mask_token_id
    base = BaseForward(ad, mode)
    h_block = base(x, attn, 8, 12, first_of_block=True)
    torch.testing.assert_close(h_block, ad.hidden(x, attn))
    x[:, [9, 11]] = 5  # two commits in the block [8, 12)
    h = base(x, attn, 8, 12, first_of_block=False)
    end = 16 if mode == "prefix" else 12
    assert torch.equal(h[:, :8], h_block[:, :8]) and torch.equal(h[:, end:], h_block[:, end:])
    assert not torch.allclose(h[:, 8:12], h_block[:, 8:12])  # the window is recomputed
    assert base.cached_forwards == 1


def _policies(sampler):
    """Every decoding policy that runs in semi-AR blocks (EDLM scores complete strings: no blocks, no cache)."""
    judge = FavouriteTokenJudge(12, 5)
    return {
        "parallel": dict(K=2),
        "adjust": dict(K=3, sampler=sampler),
        "threshold": dict(decoding=Threshold(0.7), alg="confidence"),
        "entropy_bound": dict(decoding=EntropyBound(0.5)),
        "adjust_adaptive": dict(decoding=AdaptiveAdjust("threshold", 0.7, 3), sampler=sampler, alg="confidence"),
        "apd": dict(decoding=APD(judge, weight=0.5)),
        "adjust_ctx": dict(K=3, sampler=sampler, cache_context=True),
        "parallel_dream_schedule": dict(K=2, schedule="dream", sample_mask=True),  # Dream's own sampling
        "adjust_llada_schedule": dict(K=3, sampler=sampler, schedule="llada"),
    }


def _same(a, b):
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.commit_pass, b.commit_pass)
    assert a.base_forwards == b.base_forwards and a.sampler_passes == b.sampler_passes


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("policy", list(_policies(None)))
def test_refresh_every_forward_gives_the_uncached_tokens(model, sampler, mode, policy):
    kw = {**GEN, "temperature": 0.0, **_policies(sampler)[policy]}
    want = adjust.generate(model, PROMPTS, **kw)
    got = adjust.generate(model, PROMPTS, base_cache=mode, base_cache_refresh="forward", **kw)
    _same(got, want)
    assert got.cached_forwards == want.base_forwards - 3 > 0  # every forward but each block's first is windowed


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_refresh_every_forward_keeps_the_random_stream_at_t1(model, sampler, mode):
    kw = dict(**GEN, K=3, sampler=sampler, temperature=1.0, seed=11)
    _same(adjust.generate(model, PROMPTS, base_cache=mode, base_cache_refresh="forward", **kw),
          adjust.generate(model, PROMPTS, **kw))


@requires_triton
@pytest.mark.parametrize(("policy", "mode"), [("adjust", "dual"), ("adjust_adaptive", "prefix"), ("parallel", "dual")])
def test_triton_backend_refresh_every_forward_gives_its_uncached_tokens(model, sampler, mode, policy):
    """The fused loops take the composed hidden states like any others (2 blocks: the interpreter is slow)."""
    kw = {**GEN, "max_new_tokens": 8, "temperature": 0.0, "backend": "triton", **_policies(sampler)[policy]}
    _same(adjust.generate(model, PROMPTS, base_cache=mode, base_cache_refresh="forward", **kw),
          adjust.generate(model, PROMPTS, **kw))


@requires_triton
@pytest.mark.parametrize(("policy", "mode"), [("adjust", "dual"), ("adjust_adaptive", "prefix")])
def test_triton_backend_follows_the_window_like_the_eager_loop(model, sampler, mode, policy):
    """With the default refresh the fused loops record every pass at a block's full step and run the later
    steps' passes on the window (adjust.sampler_block_cache), as the eager loop does: the same tokens and
    commit order at T = 0 as the torch backend (blocks of 6 so that later steps run passes; 2 blocks)."""
    kw = {"max_new_tokens": 12, "block_length": 6, "temperature": 0.0, "base_cache": mode, "return_history": True,
          **_policies(sampler)[policy]}
    got = adjust.generate(model, PROMPTS, backend="triton", **kw)
    want = adjust.generate(model, PROMPTS, backend="torch", **kw)
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.commit_pass, want.commit_pass)
    assert got.cached_forwards == want.cached_forwards > 0
    # every committed token's log q agrees: the later steps' passes ran on the same rows and keys/values
    logq = [[torch.tensor(r.logprobs[b]) for r in out.history for b in range(len(PROMPTS))] for out in (got, want)]
    torch.testing.assert_close(torch.cat(logq[0]), torch.cat(logq[1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_is_refreshed_at_every_block_start_with_the_full_forwards_kv(model, sampler, mode, monkeypatch):
    """At each refresh point (a block's first forward) the cache equals the keys/values of a full forward
    of the sequence as it is then: the earlier blocks committed, this block and the rest masked."""
    ad = as_adapter(model)
    seen = []
    record = ad.hidden_and_cache

    def spy(x, attention_mask=None):
        h, cache = record(x, attention_mask)
        seen.append((x.clone(), attention_mask, [k.clone() for k in cache.keys], [v.clone() for v in cache.values]))
        return h, cache

    monkeypatch.setattr(ad, "hidden_and_cache", spy)
    out = adjust.generate(ad, PROMPTS, K=3, sampler=sampler, temperature=0.0, base_cache=mode, **GEN)
    P = out.prompt_length
    assert len(seen) == 3 and out.cached_forwards == out.base_forwards - 3
    for block, (x, attn, keys, values) in enumerate(seen):
        start = P + 4 * block
        assert torch.equal(x[:, :start], out.sequences[:, :start])  # the finished blocks, as they end
        assert bool((x[:, start:] == ad.mask_token_id).all())
        for (k, v), ck, cv in zip(_reference_kv(model, x, attn), keys, values):
            torch.testing.assert_close(ck, k, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(cv, v, rtol=1e-6, atol=1e-6)


def test_block_refresh_is_an_approximation(model):
    """With the default refresh the cached positions miss the block's new tokens: the windowed hidden
    states differ from the full forward's (docs/results.md measures what that costs)."""
    ad = as_adapter(model)
    x, attn = _padded_batch(ad, 3, 16, seed=5)
    x[:, 8:] = ad.mask_token_id
    base = BaseForward(ad, "dual")
    base(x, attn, 8, 12, first_of_block=True)
    x[:, 8:11] = torch.tensor([5, 6, 7])
    assert not torch.allclose(base(x, attn, 8, 12, first_of_block=False)[:, 8:12], ad.hidden(x, attn)[:, 8:12],
                              atol=1e-4)


def test_bad_base_cache_settings_are_refused(model):
    kw = dict(max_new_tokens=8, K=2)
    with pytest.raises(ValueError, match="set block_length"):
        adjust.generate(model, PROMPTS, base_cache="prefix", **kw)
    with pytest.raises(ValueError, match="base_cache must be"):
        adjust.generate(model, PROMPTS, base_cache="suffix", block_length=4, **kw)
    with pytest.raises(ValueError, match="base_cache_refresh must be"):
        adjust.generate(model, PROMPTS, base_cache="dual", base_cache_refresh="step", block_length=4, **kw)
    with pytest.raises(ValueError, match="refreshes a base cache"):
        adjust.generate(model, PROMPTS, base_cache_refresh="forward", block_length=4, **kw)
    with pytest.raises(ValueError, match="infilling"):
        adjust.generate(model, [[1, 5, 3, 6]], base_cache="dual", block_length=4, **kw)
    toy = FiniteJointLM([[1, 4, 5, 6, 7], [1, 5, 4, 6, 7]])
    with pytest.raises(ValueError, match="no cached forward"):
        adjust.generate(toy, [[1]], base_cache="dual", block_length=2, max_new_tokens=4, K=2)
