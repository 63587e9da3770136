"""Fast backends against the reference engine: same tokens at T=0 (same distribution: test_generate_exactness)."""

import pytest
import torch

import adjust
from conftest import tiny_mdlm


@pytest.mark.parametrize("alg", ["entropy", "confidence", "margin", "low_confidence"])
@pytest.mark.parametrize("K", [1, 3])
def test_cpp_backend_equals_reference_at_t0(alg, K):
    model = tiny_mdlm(vocab_size=40, sharpen=10.0, mix=10.0)
    kw = dict(K=K, max_new_tokens=12, temperature=0.0, alg=alg, block_length=6)
    prompts = [[1, 7, 8], [1, 9], [1, 3, 10, 3]]  # padding and masks inside prompts
    ref = adjust.generate(model, prompts, **kw)
    fast = adjust.generate(model, prompts, backend="cpp", **kw)
    assert torch.equal(ref.sequences, fast.sequences)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_fast_backends_on_a_shipped_model_with_its_sampler(backend):
    model = adjust.MaskedDiffusionLM.from_pretrained("synthetic")
    sampler = adjust.AdjustSampler.from_pretrained("synthetic")
    prompts = [[1], [1, 9, 3, 12], [1, 20]]  # padding and a mask inside a prompt
    for smp in (None, sampler):
        kw = dict(K=4, sampler=smp, max_new_tokens=16, temperature=0.0)
        ref = adjust.generate(model, prompts, **kw)
        fast = adjust.generate(model, prompts, backend=backend, **kw)
        assert torch.equal(ref.sequences, fast.sequences)
        assert ref.base_forwards == fast.base_forwards


def test_triton_backend_history_and_accounting():
    model = tiny_mdlm(vocab_size=40, sharpen=10.0, mix=10.0)
    sampler = adjust.AdjustSampler.from_base(model)
    with torch.no_grad():
        sampler.norm_out.weight.fill_(0.7)
    kw = dict(K=3, sampler=sampler, max_new_tokens=7, batch_size=2, temperature=0.0, return_history=True)
    ref = adjust.generate(model, **kw)
    fast = adjust.generate(model, backend="triton", **kw)
    assert torch.equal(ref.sequences, fast.sequences)
    assert torch.equal(ref.commit_pass >= 0, fast.commit_pass >= 0)
    assert fast.sampler_passes == 3 * 2  # 3 base steps × (K − 1): the fused loop always runs K passes
    for b in range(2):
        r = [p for rec in ref.history for p in rec.positions[b]]
        f = [p for rec in fast.history for p in rec.positions[b]]
        assert r == f  # same positions in the same order


def test_same_seed_same_backend_same_tokens():
    model = tiny_mdlm(vocab_size=40, sharpen=4.0)
    kw = dict(K=2, max_new_tokens=8, batch_size=4, seed=11, backend="cpp")
    assert torch.equal(adjust.generate(model, **kw).sequences, adjust.generate(model, **kw).sequences)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("alg", ["entropy", "margin", "low_confidence"])
@pytest.mark.parametrize("filters", [{"top_p": 0.6}, {"top_k": 3}, {"top_p": 0.9, "top_k": 5}])
def test_fast_backends_with_top_p_top_k_equal_reference_at_t0(backend, alg, filters):
    """Dream's filters change the scores (computed on the filtered distribution), hence the unmask order."""
    model = tiny_mdlm(vocab_size=40, sharpen=2.0, mix=3.0)
    sampler = adjust.AdjustSampler.from_base(model)
    with torch.no_grad():
        sampler.norm_out.weight.fill_(0.7)
    prompts = [[1, 7, 8], [1, 9]]
    for smp in (None, sampler):
        kw = dict(K=3, sampler=smp, max_new_tokens=7, temperature=0.0, alg=alg, **filters)
        ref = adjust.generate(model, prompts, **kw)
        fast = adjust.generate(model, prompts, backend=backend, **kw)
        assert torch.equal(ref.sequences, fast.sequences) and torch.equal(ref.commit_pass, fast.commit_pass)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_fast_backends_refuse_settings_they_do_not_cover(backend):
    model = tiny_mdlm(vocab_size=40)
    with pytest.raises(ValueError, match="alg"):
        adjust.generate(model, K=2, max_new_tokens=4, alg="random", backend=backend)
    with pytest.raises(ValueError, match="alg_temp"):
        adjust.generate(model, K=2, max_new_tokens=4, alg_temp=0.5, backend=backend)


def test_auto_falls_back_to_the_reference():
    model = tiny_mdlm(vocab_size=40)
    # alg="random" is outside the fast paths: auto runs the reference, with its random stream
    out = adjust.generate(model, K=2, max_new_tokens=4, alg="random", backend="auto", seed=0)
    ref = adjust.generate(model, K=2, max_new_tokens=4, alg="random", backend="torch", seed=0)
    assert torch.equal(out.sequences, ref.sequences)
