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
from adjust_kernels._triton_utils import assert_no_worse, gumbel_noise, interpreting, philox_uint32
from adjust_kernels.launch import Launch, LaunchConfig
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
        Launch(_philox_kernel, LaunchConfig(grid=(1,), constexprs={"BN": 16, "BV": 32}), (so, got))()
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


# -- kept ids: a per-row vocabulary (candidate-restricted ADJUST) -------------------------------------


def _kept(n: int, v: int, k: int, include: int | None = None) -> torch.Tensor:
    """[n, k] strictly ascending random ids per row; row 0 holds `include` (the excluded token) if given."""
    ids = torch.stack([torch.randperm(v)[:k] for _ in range(n)])
    if include is not None and not (ids[0] == include).any():
        ids[0, 0] = include
    return ids.sort(dim=1).values.to(DEVICE)


def _kept_truth(h, w, b, ids, exclude: int, temperature: float, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float64 scores of `tokens` under the logits restricted to each row's kept ids."""
    x = (h.double()[:, None, :] * w.double()[ids]).sum(-1) + (b.double()[ids] if b is not None else 0.0)
    x = x.masked_fill(ids == exclude, float("-inf"))
    z = x / temperature if temperature > 0 else x
    p = torch.softmax(z, -1)
    at = (ids == tokens[:, None]).double().argmax(1, keepdim=True)
    top = torch.nn.functional.pad(p, (0, 1)).topk(2, dim=-1).values
    return {
        "entropy": torch.special.xlogy(p, p).sum(-1),
        "confidence": p.gather(1, at).squeeze(1),
        "margin": top[:, 0] - top[:, 1],
        "low_confidence": torch.softmax(x, -1).gather(1, at).squeeze(1),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,v,d,k", [(1, 131, 20, 1), (5, 67, 24, 7), (19, 300, 40, 45)])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_kept_ids_match_reference(n: int, v: int, d: int, k: int, temperature: float, dtype: torch.dtype) -> None:
    h, w, b = _inputs(n, v, d, dtype, bias=n > 1)
    exclude = int(torch.randint(v, ()))
    ids = _kept(n, v, k, include=exclude if k > 1 else None)  # a one-id row may not be the excluded one
    so = torch.tensor([SEED, 77], device=DEVICE)
    for alg in SCORES:
        tokens, scores, logq = lm_head_sample(h, w, b, so, temperature=temperature, alg=alg, exclude_token=exclude,
                                              kept_ids=ids, num_splits=2)
        ref = lm_head_sample_reference(h, w, b, so, temperature=temperature, alg=alg, exclude_token=exclude, kept_ids=ids)
        assert ((ids == tokens[:, None]).sum(1) == 1).all() and not (tokens == exclude).any(), alg
        truth = _kept_truth(h, w, b, ids, exclude, temperature, ref[0])
        if dtype == torch.float32:
            assert torch.equal(tokens, ref[0]), alg
        else:  # where they differ, the two keys (z, plus the shared noise at T > 0) are tied up to the rounding
            x = (h.double()[:, None, :] * w.double()[ids]).sum(-1) + (b.double()[ids] if b is not None else 0.0)
            key = x / temperature + gumbel_noise(so, n, k, x.device, ids).double() if temperature > 0 else x
            key_of = lambda t: key.gather(1, (ids == t[:, None]).double().argmax(1, keepdim=True)).squeeze(1)  # noqa: E731
            gap = (key_of(ref[0]) - key_of(tokens)).abs()
            bound = 4 * EPS[dtype] * x.abs().amax(1) / (temperature if temperature > 0 else 1.0)
            assert (gap <= bound)[tokens != ref[0]].all(), alg
        t = truth[alg]
        if torch.equal(tokens, ref[0]):
            assert_no_worse(scores, ref[1], t, REL_SLACK[dtype] * max(1.0, t.abs().max().item()), f"{alg} {dtype}")
        if temperature > 0:  # log q of the same token (rows where a rounding tie picked another are checked above)
            same = tokens == ref[0]
            torch.testing.assert_close(logq[same], ref[2][same], rtol=0,
                                       atol=REL_SLACK[dtype] * 10 * max(1.0, ref[2].abs().max().item()))


def test_keeping_every_id_is_the_unrestricted_op() -> None:
    h, w, b = _inputs(9, 83, 24, torch.float32, True)
    so = torch.tensor([SEED, 5], device=DEVICE)
    every = torch.arange(83, device=DEVICE).expand(9, 83).contiguous()
    for temperature in (0.0, 1.1):
        full = lm_head_sample(h, w, b, so, temperature=temperature, alg="margin", exclude_token=11)
        kept = lm_head_sample(h, w, b, so, temperature=temperature, alg="margin", exclude_token=11, kept_ids=every)
        assert torch.equal(full[0], kept[0])  # a kept token draws the noise it draws unrestricted
        torch.testing.assert_close(full[1], kept[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(full[2], kept[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_logits_out_are_the_logits(dtype: torch.dtype) -> None:
    h, w, b = _inputs(6, 70, 24, dtype, True)
    so = torch.tensor([SEED, 0], device=DEVICE)
    out = torch.empty(6, 70, dtype=dtype, device=DEVICE)
    ref_out = torch.empty_like(out)
    got = lm_head_sample(h, w, b, so, temperature=0.0, exclude_token=4, logits_out=out)
    ref = lm_head_sample_reference(h, w, b, so, temperature=0.0, exclude_token=4, logits_out=ref_out)
    assert torch.equal(got[0], ref[0])
    assert torch.isinf(out[:, 4]).all() and torch.isinf(ref_out[:, 4]).all()
    keep = torch.arange(70, device=DEVICE) != 4
    truth = (h.double() @ w.double().T + b.double())[:, keep]
    assert_no_worse(out[:, keep], ref_out[:, keep], truth, REL_SLACK[dtype] * truth.abs().max().item(), "logits_out")
    ids = _kept(6, 70, 9)  # with kept ids (no excluded token), the kept logits
    kept_out, ref_kept_out = torch.empty(6, 9, dtype=dtype, device=DEVICE), torch.empty(6, 9, dtype=dtype, device=DEVICE)
    lm_head_sample(h, w, b, so, temperature=0.0, kept_ids=ids, logits_out=kept_out)
    lm_head_sample_reference(h, w, b, so, temperature=0.0, kept_ids=ids, logits_out=ref_kept_out)
    kept_truth = (h.double() @ w.double().T + b.double()).gather(1, ids)
    assert_no_worse(kept_out, ref_kept_out, kept_truth, REL_SLACK[dtype] * truth.abs().max().item(), "kept logits_out")


def test_kept_distribution_chi_square() -> None:
    """~20k draws restricted to 9 kept ids of a 41-token vocabulary against the renormalised softmax."""
    v, d, rows, offsets, temperature = 41, 16, 2000, 10, 0.9
    h1, w, b = _inputs(1, v, d, torch.float32, True, scale=0.5)
    ids1 = _kept(1, v, 9)
    exclude = int(ids1[0, 4])  # one kept id is the excluded token: probability 0
    x = (h1.double() @ w.double().T + b.double())[0, ids1[0]]
    x[4] = float("-inf")
    p = torch.softmax(x / temperature, -1)
    counts = torch.zeros(v, dtype=torch.float64)
    for off in range(offsets):
        so = torch.tensor([SEED, off], device=DEVICE)
        tokens = lm_head_sample(h1.expand(rows, d), w, b, so, temperature=temperature, alg="entropy",
                                exclude_token=exclude, kept_ids=ids1.expand(rows, 9))[0]
        counts += torch.bincount(tokens.cpu(), minlength=v).double()
    kept_counts = counts[ids1[0].cpu()]
    assert kept_counts.sum() == rows * offsets and kept_counts[4] == 0  # nothing outside the kept set
    live = torch.arange(9) != 4
    pvalue = stats.chisquare(kept_counts[live].numpy(), (p[live] * rows * offsets).numpy()).pvalue
    assert pvalue > 1e-4, f"chi-square p = {pvalue:.2e}"


def test_rejects_bad_kept_ids() -> None:
    h, w, b = _inputs(3, 20, 16, torch.float32, True)
    so = torch.tensor([1, 2], device=DEVICE)
    good = torch.tensor([[1, 5, 7]] * 3, device=DEVICE)
    for bad in (good.flip(1), torch.tensor([[1, 5, 5]] * 3, device=DEVICE), good + 13, good - 2):
        with pytest.raises(ValueError, match="ascending token ids"):
            lm_head_sample(h, w, b, so, temperature=1.0, kept_ids=bad)
        with pytest.raises(ValueError, match="ascending token ids"):
            lm_head_sample_reference(h, w, b, so, temperature=1.0, kept_ids=bad)
    for bad in (good.int(), good[:2], good[:, :0], good[0]):
        with pytest.raises(ValueError, match="kept_ids must be"):
            lm_head_sample(h, w, b, so, temperature=1.0, kept_ids=bad)
    with pytest.raises(ValueError, match="logits_out"):
        lm_head_sample(h, w, b, so, temperature=1.0, kept_ids=good, logits_out=torch.empty(3, 20, device=DEVICE))
    with pytest.raises(ValueError, match="logits_out"):
        lm_head_sample(h, w, b, so, temperature=1.0, logits_out=torch.empty(3, 20, dtype=torch.float16, device=DEVICE))
