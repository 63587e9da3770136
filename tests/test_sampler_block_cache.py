"""The base cache's rule applied to g (adjust.sampler_block_cache): a refresh step's passes are exactly g's
and record every row's keys/values; a later step's pass k equals g at the window rows with every other
row's layer input as it was at the refresh step's pass k (keys/values are row-wise); ADJUST K = 2 is
unchanged by it; later steps run g on the window rows only."""

from __future__ import annotations

import pytest
import torch

import adjust
from adjust.decoding import AdaptiveAdjust
from adjust.models.adapter import as_adapter
from adjust.sampler_block_cache import SamplerBlockCache
from conftest import perturbed_sampler, tiny_mdlm

PROMPTS = [[1, 5, 6, 7, 8, 9, 10], [1, 4], [1, 11, 4, 6]]  # left padding
GEN = dict(max_new_tokens=12, block_length=4)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def g_over_every_row(self, h, x, attention_mask, k, final_rows):
    """``SamplerBlockCache.__call__`` without the window (g over every row at every step), to patch in."""
    if final_rows is not None:
        return self.sampler.forward_rows(h, x, self.adapter, attention_mask, final_rows)
    return self.sampler(h, x, self.adapter, attention_mask)


def _parts(dtype, seed=0):
    model = tiny_mdlm(vocab_size=13, seed=seed, sharpen=8.0, mix=6.0).to(dtype)
    return model, perturbed_sampler(model, seed=seed), as_adapter(model)


def _inputs(ad, B, L, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, ad.vocab_size, (B, L), generator=g)
    attn = torch.ones(B, L, dtype=torch.long)
    for b in range(1, B):
        attn[b, : 2 * b] = 0  # left padding
    h = torch.randn(B, L, 32, generator=g, dtype=torch.float64).to(dtype)
    return x.masked_fill(attn == 0, ad.pad_token_id), attn, h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("window", [(9, 13), (9, 19)])  # dual (the block) / prefix (the block and after)
def test_later_pass_is_g_over_the_refresh_steps_inputs_outside_the_window(dtype, window):
    model, g, ad = _parts(dtype)
    B, L = 3, 19
    x, attn, h_a = _inputs(ad, B, L, seed=1, dtype=dtype)
    s, e = window
    x[:, s:e] = ad.mask_token_id
    cache = SamplerBlockCache(g, ad)
    cache.start_step(None)  # refresh step: exactly g, recorded
    h1 = cache(h_a, x, attn, 1, None)
    h2 = cache(h1, x, attn, 2, None)
    assert torch.equal(h1, g(h_a, x, ad, attn)) and torch.equal(h2, g(h1, x, ad, attn))

    x_b = x.clone()
    x_b[:, s + 1] = 7  # a commit in the block
    h_b = h_a.clone()
    h_b[:, s:e] += torch.randn_like(h_b[:, s:e])  # the window's fresh base states
    cache.start_step(window)
    g1 = cache(h_b, x_b, attn, 1, None)
    g2 = cache(g1, x_b, attn, 2, None)
    inside = torch.zeros(L, dtype=torch.bool)
    inside[s:e] = True
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    # keys/values are row-wise: outside the window they are those of the refresh step's pass inputs
    ref1 = g(torch.where(inside[:, None], h_b, h_a), x_b, ad, attn)
    ref2 = g(torch.where(inside[:, None], g1, h1), x_b, ad, attn)
    torch.testing.assert_close(g1[:, s:e], ref1[:, s:e], **tol)
    torch.testing.assert_close(g2[:, s:e], ref2[:, s:e], **tol)
    assert torch.equal(g1[:, ~inside], h_b[:, ~inside]) and torch.equal(g2[:, ~inside], h_b[:, ~inside])
    # pass 1 with nothing outside the window changed is g itself (pass 1 = all of ADJUST at K = 2)
    torch.testing.assert_close(g1[:, s:e], g(h_b, x_b, ad, attn)[:, s:e], **tol)
    # a step's last pass: the same rows at its candidates only, every other row as given
    cand = (x_b == ad.mask_token_id) & inside
    cand[0, s + 2] = False  # batch rows with different candidate counts
    last = cache(g1, x_b, attn, 2, cand)
    torch.testing.assert_close(last[cand], g2[cand], **tol)
    assert torch.equal(last[~cand], g1[~cand])


def test_final_pass_records_and_a_pass_the_refresh_step_missed_runs_over_every_row():
    model, g, ad = _parts(torch.float64)
    x, attn, h = _inputs(ad, 2, 15, seed=2, dtype=torch.float64)
    x[:, 7:11] = ad.mask_token_id
    rows = x == ad.mask_token_id
    cache = SamplerBlockCache(g, ad)
    cache.start_step(None)
    got = cache(h, x, attn, 1, rows)  # the step's last pass: candidate rows only, every row's K/V recorded
    assert torch.equal(got, g.forward_rows(h, x, ad, attn, rows)) and len(cache.kv.keys) == 1
    cache.start_step((7, 11))
    h1 = cache(h, x, attn, 1, None)
    h2 = cache(h1, x, attn, 2, None)  # not recorded at the refresh step: over every row, then recorded
    assert torch.equal(h2, g(h1, x, ad, attn)) and len(cache.kv.keys) == 2
    with pytest.raises(RuntimeError, match="before pass 3"):
        cache(h2, x, attn, 4, None)
    cache.start_step(None)  # a new block: the record starts again
    cache(h, x, attn, 1, None)
    assert len(cache.kv.keys) == 1


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_adjust_k2_is_unchanged_by_caching_g(mode, monkeypatch):
    """K = 2 runs only pass 1, whose recorded keys/values are what g computes again (T = 0: same tokens)."""
    model, g, _ = _parts(torch.float32, seed=3)
    kw = dict(**GEN, K=2, sampler=g, temperature=0.0, base_cache=mode)
    got = adjust.generate(model, PROMPTS, **kw)

    monkeypatch.setattr(SamplerBlockCache, "__call__", g_over_every_row)
    want = adjust.generate(model, PROMPTS, **kw)
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.commit_pass, want.commit_pass)


@pytest.mark.parametrize(("mode", "policy"), [("dual", dict(K=4)), ("prefix", dict(K=3)),
                                              ("dual", dict(decoding=AdaptiveAdjust("threshold", 0.7, 3),
                                                            alg="confidence"))])
def test_later_steps_run_g_on_the_window_rows_only(mode, policy):
    model, g, _ = _parts(torch.float32, seed=4)
    seen = []
    hook = g.layer.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:  # 2 blocks of 8: the later steps of a block still run passes before their last
        out = adjust.generate(model, PROMPTS, max_new_tokens=16, block_length=8, sampler=g, temperature=1.0, seed=5,
                              base_cache=mode, **policy)
    finally:
        hook.remove()
    L, P = out.sequences.shape[1], out.prompt_length
    windows = {L - P - 8 * b if mode == "prefix" else 8 for b in range(2)}
    assert out.sampler_passes == len(seen) > 0
    assert seen.count(L) <= 2 * 2  # at most the refresh steps' non-final passes (≤ 2 per block)
    assert set(seen) - {L} <= windows | set(range(1, 9))  # window rows, or a last pass's candidates
    assert any(n in windows and n < L for n in seen)
