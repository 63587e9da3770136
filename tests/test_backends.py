"""Fast backends against the reference engine: same tokens at T=0 (same distribution: test_generate_exactness)."""

import pytest
import torch

import adjust
from conftest import tiny_mdlm


@pytest.mark.parametrize("alg", ["entropy", "confidence", "margin", "low_confidence"])
@pytest.mark.parametrize("K", [1, 3])
def test_cpp_backend_equals_reference_at_t0(alg, K):
    model = tiny_mdlm(vocab_size=40, sharpen=4.0, mix=3.0)
    kw = dict(K=K, max_new_tokens=12, temperature=0.0, alg=alg, block_length=6)
    prompts = [[1, 7, 8], [1, 9], [1, 3, 10, 3]]  # padding and masks inside prompts
    ref = adjust.generate(model, prompts, **kw)
    fast = adjust.generate(model, prompts, backend="cpp", **kw)
    assert torch.equal(ref.sequences, fast.sequences)


def test_cpp_backend_with_a_sampler_on_a_shipped_model():
    model = adjust.MaskedDiffusionLM.from_pretrained("synthetic")
    sampler = adjust.AdjustSampler.from_pretrained("synthetic")
    for smp in (None, sampler):
        kw = dict(K=4, sampler=smp, max_new_tokens=16, batch_size=8, temperature=0.0)
        assert torch.equal(adjust.generate(model, **kw).sequences,
                           adjust.generate(model, backend="cpp", **kw).sequences)


def test_same_seed_same_backend_same_tokens():
    model = tiny_mdlm(vocab_size=40, sharpen=4.0)
    kw = dict(K=2, max_new_tokens=8, batch_size=4, seed=11, backend="cpp")
    assert torch.equal(adjust.generate(model, **kw).sequences, adjust.generate(model, **kw).sequences)


def test_cpp_backend_refuses_settings_it_does_not_cover():
    model = tiny_mdlm(vocab_size=40)
    with pytest.raises(ValueError, match="top_p"):
        adjust.generate(model, K=2, max_new_tokens=4, top_p=0.9, backend="cpp")
    # auto falls back to the reference for them
    out = adjust.generate(model, K=2, max_new_tokens=4, top_p=0.9, backend="auto", seed=0)
    ref = adjust.generate(model, K=2, max_new_tokens=4, top_p=0.9, backend="torch", seed=0)
    assert torch.equal(out.sequences, ref.sequences)
