"""lm_head_sample (Triton) against its PyTorch twin, a float64 truth and the target distribution;
runs under TRITON_INTERPRET=1 on CPU.

Greedy tokens must equal the reference's (in fp16/bf16, up to ties that the rounding of the logits
can move); scores follow the tolerance rule |fast − truth| ≤ |torch − truth| + slack. At T > 0 the
kernel and the reference share the Philox noise, so their tokens are equal too; a chi-square test
checks the sampled distribution itself. Fresh random inputs each run; the seed is printed
(ADJUST_TEST_SEED=<seed> replays it).
"""

from __future__ import annotations


import pytest
import torch
import triton
import triton.language as tl
from scipy import stats

from kernel_common import DEVICE, KERNEL_TEST, SEED
from adjust_kernels._triton_utils import assert_no_worse, interpreting, philox_uint32
from adjust_kernels.lm_head_sample import (
    SCORES,
    lm_head_sample,
    lm_head_sample_reference,
)

pytestmark = KERNEL_TEST
# Relative slack on the scores: the kernel and torch round the same fp32 sums to the dtype, in a different
# order; under the interpreter fp32 -> bf16 truncates, so bf16 logits can sit a unit further off.
REL_SLACK = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 3e-2 if interpreting() else 1e-2}
EPS = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}



@triton.jit
def _philox_kernel(so_ptr, out_ptr, BN: tl.constexpr, BV: tl.constexpr):
    rows, cols = tl.arange(0, BN), tl.arange(0, BV)
    offset = tl.load(so_ptr + 1)
    zero = tl.zeros((BN, BV), tl.uint32)
    bits, _, _, _ = tl.philox(tl.load(so_ptr), zero + cols[None, :].to(tl.uint32), zero + rows[:, None].to(tl.uint32),
                              zero + (offset & 0xFFFFFFFF).to(tl.uint32), zero + ((offset >> 32) & 0xFFFFFFFF).to(tl.uint32))
    tl.store(out_ptr + rows[:, None] * BV + cols[None, :], bits.to(tl.int64) & 0xFFFFFFFF)


def test_philox_spec_is_bit_equal_to_tl_philox() -> None:
    """The PyTorch Philox the reference samples with is the kernels' tl.philox, word for word."""
    m32 = 0xFFFFFFFF
    for seed, offset in ((SEED, 0), (-SEED, 2**40 + 7), (2**62 + 11, -1)):
        so = torch.tensor([seed, offset], device=DEVICE)
        got = torch.empty(16, 32, dtype=torch.int64, device=DEVICE)
        _philox_kernel[(1,)](so, got, BN=16, BV=32)
        want = philox_uint32(so[0], torch.arange(32, device=DEVICE)[None], torch.arange(16, device=DEVICE)[:, None],
                             so[1] & m32, (so[1] >> 32) & m32)
        assert torch.equal(got, want)


def _inputs(n: int, v: int, d: int, dtype: torch.dtype, bias: bool, scale: float = 1.0):
    h = torch.randn(n, d).to(dtype=dtype, device=DEVICE)
    w = (torch.randn(v, d) * scale * d**-0.5 * 3).to(dtype=dtype, device=DEVICE)
    b = torch.randn(v).to(dtype=dtype, device=DEVICE) if bias else None
    return h, w, b


def _truth(h, w, b, exclude: int, temperature: float, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float64 scores of `tokens` under the exact logits."""
    x = h.double() @ w.double().T + (b.double() if b is not None else 0.0)
    x[:, exclude] = float("-inf")
    z = x / temperature if temperature > 0 else x
    p = torch.softmax(z, -1)
    top = p.topk(2, dim=-1).values
    return {
        "entropy": torch.special.xlogy(p, p).sum(-1),
        "confidence": p.gather(1, tokens[:, None]).squeeze(1),
        "margin": top[:, 0] - top[:, 1],
        "low_confidence": torch.softmax(x, -1).gather(1, tokens[:, None]).squeeze(1),
        "logits": x,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,v,d", [(1, 131, 20), (5, 67, 24), (19, 300, 40)])
@pytest.mark.parametrize("bias,splits", [(False, None), (True, 3)])
def test_greedy_matches_reference(n: int, v: int, d: int, bias: bool, splits: int | None, dtype: torch.dtype) -> None:
    h, w, b = _inputs(n, v, d, dtype, bias)
    exclude = int((h.double() @ w.double().T)[0].argmax())  # row 0's favourite is the excluded token
    so = torch.tensor([SEED, 0], device=DEVICE)
    for alg in SCORES:
        tokens, scores, logq = lm_head_sample(h, w, b, so, temperature=0.0, alg=alg, exclude_token=exclude, num_splits=splits)
        ref_tokens, ref_scores, _ = lm_head_sample_reference(h, w, b, so, temperature=0.0, alg=alg, exclude_token=exclude)
        assert tokens.dtype == torch.int64 and scores.dtype == logq.dtype == torch.float32
        assert not (tokens == exclude).any()
        assert torch.equal(logq, torch.zeros_like(logq))
        truth = _truth(h, w, b, exclude, 0.0, ref_tokens)
        if dtype == torch.float32:
            assert torch.equal(tokens, ref_tokens), alg
        else:  # where they differ, the two logits must be tied up to the dtype's rounding
            x = truth["logits"]
            gap = x.gather(1, ref_tokens[:, None]) - x.gather(1, tokens[:, None])
            assert (gap.abs().squeeze(1) <= 4 * EPS[dtype] * x.abs().amax(1))[tokens != ref_tokens].all(), alg
        t = truth[alg]
        assert_no_worse(scores, ref_scores, t, REL_SLACK[dtype] * max(1.0, t.abs().max().item()), f"{alg} {dtype}")


@pytest.mark.parametrize("temperature", [0.7, 1.5])
@pytest.mark.parametrize("alg", SCORES)
def test_sampling_shares_the_reference_stream(alg: str, temperature: float) -> None:
    h, w, b = _inputs(19, 300, 40, torch.float32, True)
    so = torch.tensor([SEED, 12345], device=DEVICE)
    tokens, scores, logq = lm_head_sample(h, w, b, so, temperature=temperature, alg=alg, exclude_token=7, num_splits=3)
    ref = lm_head_sample_reference(h, w, b, so, temperature=temperature, alg=alg, exclude_token=7)
    assert torch.equal(tokens, ref[0])
    truth = _truth(h, w, b, 7, temperature, tokens)
    assert_no_worse(scores, ref[1], truth[alg], 1e-5 * max(1.0, truth[alg].abs().max().item()), alg)
    z = truth["logits"] / temperature
    truth_logq = torch.log_softmax(z, -1).gather(1, tokens[:, None]).squeeze(1)
    assert_no_worse(logq, ref[2], truth_logq, 1e-5 * truth_logq.abs().max().item(), "logq")
    # The draw depends on (seed, offset, row, token) only: not on the split of the vocabulary.
    assert torch.equal(lm_head_sample(h, w, b, so, temperature=temperature, alg=alg, exclude_token=7, num_splits=1)[0], tokens)


def test_seed_is_read_from_the_device_tensor() -> None:
    h, w, b = _inputs(64, 67, 24, torch.float16, False, scale=0.1)  # flat: draws differ between streams
    so = torch.tensor([SEED, 0], device=DEVICE)
    first = lm_head_sample(h, w, b, so, temperature=1.0)[0]
    assert torch.equal(lm_head_sample(h, w, b, so, temperature=1.0)[0], first)
    so[1] += 1  # what a captured graph does between replays: same Python arguments, new stream
    assert not torch.equal(lm_head_sample(h, w, b, so, temperature=1.0)[0], first)


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_distribution_chi_square(temperature: float) -> None:
    """~20k draws of one small distribution (2000 identical rows × 10 offsets) against softmax(z)."""
    v, d, rows, offsets = 37, 16, 2000, 10
    h1, w, b = _inputs(1, v, d, torch.float32, True, scale=0.5)
    b[3] = float("-inf")  # a zero-probability token
    x = (h1.double() @ w.double().T + b.double())[0]
    exclude = int(x.argmax())  # the most likely token is the excluded one
    x[exclude] = float("-inf")
    p = torch.softmax(x / temperature, -1)
    h = h1.expand(rows, d)
    counts = torch.zeros(v, dtype=torch.float64)
    for off in range(offsets):
        so = torch.tensor([SEED, off], device=DEVICE)
        tokens = lm_head_sample(h, w, b, so, temperature=temperature, alg="confidence", exclude_token=exclude)[0]
        counts += torch.bincount(tokens.cpu(), minlength=v).double()
    n = rows * offsets
    assert counts[exclude] == 0 and counts[3] == 0
    expected = p * n
    big = expected >= 5  # pool the rare tokens into one bin
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    pvalue = stats.chisquare(obs[keep].numpy(), exp[keep].numpy()).pvalue
    assert pvalue > 1e-4, f"chi-square p = {pvalue:.2e}"


def test_top_k_and_top_p_fall_back_to_the_reference() -> None:
    h, w, b = _inputs(7, 67, 24, torch.float32, True)
    so = torch.tensor([SEED, 3], device=DEVICE)
    for kw in ({"top_k": 5}, {"top_p": 0.8}, {"top_k": 5, "top_p": 0.8}):
        got = lm_head_sample(h, w, b, so, temperature=1.0, alg="margin", exclude_token=0, **kw)
        ref = lm_head_sample_reference(h, w, b, so, temperature=1.0, alg="margin", exclude_token=0, **kw)
        for g, r in zip(got, ref):
            assert torch.equal(g, r)
        if "top_k" in kw:
            logits = (h @ w.T + b).index_fill(1, torch.tensor([0], device=DEVICE), float("-inf"))
            assert (logits.gather(1, got[0][:, None]) >= logits.topk(5).values[:, -1:]).all()


def test_row_without_candidates_gives_minus_one_and_nan() -> None:
    h, w, _ = _inputs(3, 20, 16, torch.float32, False)
    b = torch.full((20,), float("-inf"), device=DEVICE)
    b[4] = 0.0  # the only finite logit is the excluded token's
    for t in (0.0, 1.0):
        tokens, scores, logq = lm_head_sample(h, w, b, torch.tensor([1, 2], device=DEVICE), temperature=t, exclude_token=4)
        assert (tokens == -1).all() and scores.isnan().all() and logq.isnan().all()


def test_rejects_bad_arguments() -> None:
    h, w, b = _inputs(3, 20, 16, torch.float32, True)
    so = torch.tensor([1, 2], device=DEVICE)
    with pytest.raises(ValueError, match="alg"):
        lm_head_sample(h, w, b, so, temperature=1.0, alg="random")
    with pytest.raises(TypeError, match="seed_offset"):
        lm_head_sample(h, w, b, torch.tensor([1, 2, 3], device=DEVICE), temperature=1.0)
    with pytest.raises(TypeError, match="seed_offset"):
        lm_head_sample(h, w, b, torch.tensor([1.0, 2.0], device=DEVICE), temperature=1.0)
    with pytest.raises(ValueError, match="exclude_token"):
        lm_head_sample(h, w, b, so, temperature=1.0, exclude_token=20)
    with pytest.raises(ValueError, match="bias"):
        lm_head_sample(h, w, b[:5], so, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        lm_head_sample(h, w, b, so, temperature=-1.0)
    with pytest.raises(ValueError, match="h must be"):
        lm_head_sample(h[:, :8], w, b, so, temperature=1.0)
