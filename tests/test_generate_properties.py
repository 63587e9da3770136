"""Property-based tests of `generate` over random valid settings (hypothesis)."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adjust
from adjust.sampler import AdjustSampler
from conftest import tiny_mdlm

MASK = 3
MODEL = tiny_mdlm(vocab_size=16, sharpen=3.0, mix=2.0)
SAMPLER = AdjustSampler.from_base(MODEL)
with torch.no_grad():
    SAMPLER.norm_out.weight.fill_(0.5)  # a sampler that changes the hidden states


@st.composite
def runs(draw):
    B = draw(st.integers(1, 4))
    prompts = []
    for _ in range(B):
        n = draw(st.integers(0, 5))
        body = draw(st.lists(st.integers(4, 15) | st.just(MASK), min_size=n, max_size=n))
        prompts.append([1] + body)
    block = draw(st.sampled_from([None, 1, 2, 3]))
    blocks = draw(st.integers(1, 3))
    new = blocks * block if block else draw(st.integers(1, 7))
    return dict(
        input_ids=prompts,
        K=draw(st.integers(1, 5)),
        max_new_tokens=new,
        block_length=block,
        temperature=draw(st.sampled_from([0.0, 0.7, 1.0])),
        top_p=draw(st.sampled_from([None, 0.5, 0.9])),
        top_k=draw(st.sampled_from([None, 1, 5])),
        alg=draw(st.sampled_from(["entropy", "confidence", "margin", "low_confidence", "random"])),
        alg_temp=draw(st.sampled_from([None, 0.5])),
        sampler=draw(st.sampled_from([None, SAMPLER])),
        seed=draw(st.integers(0, 2**31)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_generate_invariants(kw):
    prompts = kw["input_ids"]
    out = adjust.generate(MODEL, **kw)
    width = max(len(p) for p in prompts)
    P = out.prompt_length
    assert P == width
    assert not (out.sequences == MASK).any(), "a mask token was left"
    for b, p in enumerate(prompts):
        row = out.sequences[b, P - len(p) : P].tolist()
        assert all(t == q for t, q in zip(row, p) if q != MASK), "a prompt token changed"
    # base forwards: per block, the max over rows of ceil(masked in the block / K)
    K, n, bl = kw["K"], kw["max_new_tokens"], kw["block_length"]
    ends = [n] if bl is None else list(range(bl, n + 1, bl))
    expected, prev = 0, 0
    for i, end in enumerate(ends):
        per_row = [(sum(t == MASK for t in p) if i == 0 else 0) + end - prev for p in prompts]
        expected += max(math.ceil(c / K) for c in per_row)
        prev = end
    assert out.base_forwards == expected
    assert out.tokens_generated == sum(sum(t == MASK for t in p) for p in prompts) + len(prompts) * n
    if kw["sampler"] is None:
        assert out.sampler_passes == 0
