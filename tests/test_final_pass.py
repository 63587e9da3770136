"""A base step's last sampler pass computes g at the candidate rows only (adjust.context_cache):
the same tokens as full passes, in the eager loop and in the fused AdjustLoop, and really fewer full passes."""

from __future__ import annotations

import pytest
import torch

import adjust
from adjust.decoding.adaptive import AdaptiveAdjust
from adjust.decoding.fixed import Adjust
from adjust.decoding.policy import DecodingPolicy
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from adjust_kernels.adjust_loop import AdjustLoop, adjust_passes_reference
from conftest import perturbed_sampler, tiny_mdlm

PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 11, 12]]  # left padding


def _full_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sampler pass over all rows: the behaviour before the candidate-only last pass."""
    for cls in (DecodingPolicy, Adjust):
        monkeypatch.setattr(cls, "final_pass", lambda self, step, k: False)
    def rows(self, h, x, cand_idx, record=None):
        full = self.sampler_step(h, x, record).reshape(-1, h.shape[-1])
        return full.index_select(0, (self._row_base + cand_idx.clamp(min=0)).view(-1))

    monkeypatch.setattr(AdjustLoop, "_final_rows", rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_rows_is_g_at_those_rows(dtype):
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0).to(dtype)
    g = perturbed_sampler(model, seed=3)
    ad = as_adapter(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(4, ad.vocab_size, (3, 13), generator=gen)
    attn = torch.ones(3, 13, dtype=torch.long)
    attn[0, :3] = 0
    cand = torch.rand(3, 13, generator=gen) < 0.4
    cand[0, :3] = False
    with torch.no_grad():
        h = ad.hidden(x, attn) + 0.3 * torch.randn(3, 13, ad.hidden_size, generator=gen).to(dtype)
        got = g.forward_rows(h, x, ad, attn, cand)
        want = g(h, x, ad, attn)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got[cand], want[cand], rtol=tol, atol=tol)
    assert torch.equal(got[~cand], h[~cand])


@pytest.mark.parametrize("K", [2, 3, 5])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("adaptive", [False, True])
def test_generate_equals_full_passes(monkeypatch: pytest.MonkeyPatch, K: int, temperature: float, adaptive: bool):
    """float64, so the two ways of computing the candidates' rows cannot round apart into another token."""
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0).double()
    g = perturbed_sampler(model, seed=K)
    kw = dict(K=K, sampler=g, max_new_tokens=12, block_length=6, temperature=temperature, seed=7, backend="torch",
              return_history=True)
    if adaptive:
        kw.update(K=1, decoding=AdaptiveAdjust("threshold", 0.5, K), alg="confidence")
    fast = adjust.generate(model, PROMPTS, **kw)
    _full_passes(monkeypatch)
    full = adjust.generate(model, PROMPTS, **kw)
    assert torch.equal(fast.sequences, full.sequences) and torch.equal(fast.commit_pass, full.commit_pass)
    assert fast.sampler_passes == full.sampler_passes > 0
    logq = [[v for rec in out.history for row in rec.logprobs for v in row] for out in (fast, full)]
    assert logq[0] == pytest.approx(logq[1], rel=1e-10, abs=1e-12)  # the sampler's own log q, pass by pass


@pytest.mark.parametrize("K", [2, 4])
def test_fused_reference_loop_equals_full_passes(monkeypatch: pytest.MonkeyPatch, K: int):
    """fp32 (the kernels' floor dtype): same commits, log q equal to rounding."""
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    g, ad = perturbed_sampler(model, seed=1), as_adapter(model)
    gen = torch.Generator().manual_seed(K)
    B, L = 3, 14
    x = torch.randint(4, ad.vocab_size, (B, L), generator=gen)
    attn = torch.ones(B, L, dtype=torch.long)
    attn[1, :4] = 0
    cand_idx = torch.tensor([[3, 5, 8, 13, -1], [6, 7, 9, 10, 12], [0, 2, -1, -1, -1]])
    x.scatter_(1, cand_idx.clamp(min=0), ad.mask_token_id)
    with torch.no_grad():
        h0 = ad.hidden(x, attn)

    def run():
        xs, alive = x.clone(), cand_idx >= 0
        args = (g, ad.embed_tokens.weight, ad.lm_head_weight, ad.lm_head_bias, torch.tensor([11, 0]))
        pos, logq = adjust_passes_reference(h0, xs, cand_idx, alive, torch.tensor([K, K, 2]), *args, num_passes=K,
                                            temperature=1.0, mask_token_id=ad.mask_token_id, attention_mask=attn)
        return xs, pos.clone(), logq.clone()

    fast = run()
    _full_passes(monkeypatch)
    full = run()
    assert torch.equal(fast[0], full[0]) and torch.equal(fast[1], full[1])
    torch.testing.assert_close(fast[2], full[2], rtol=1e-5, atol=1e-6)


def test_last_pass_skips_the_full_layer(monkeypatch: pytest.MonkeyPatch):
    """K = 4, 16 tokens in blocks of 8: 4 base steps, each with 2 full g's and one candidate-only pass."""
    model = tiny_mdlm(vocab_size=29, sharpen=2.0, mix=3.0)
    g = perturbed_sampler(model)
    calls = []
    forward = AdjustSampler.forward
    monkeypatch.setattr(AdjustSampler, "forward", lambda self, *a, **kw: calls.append(1) or forward(self, *a, **kw))
    out = adjust.generate(model, PROMPTS, K=4, sampler=g, max_new_tokens=16, block_length=8, seed=0)
    assert out.base_forwards == 4 and out.sampler_passes == 12
    assert len(calls) == 8
