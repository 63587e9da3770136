"""The decoding policies follow their rules: limits, counts, and each rule replayed from the history.

Replays rebuild the state before every base forward from `return_history`, recompute the
model's distributions there (T = 0: the untempered softmax, mask id removed) and check that the
committed set is the one the rule's definition names.
"""

from collections import defaultdict

import pytest
import torch

import adjust
from adjust.decoding import APD, EDLM, AdaptiveAdjust, ARJudge, EntropyBound, Parallel, Threshold
from adjust.models.adapter import as_adapter
from adjust.unmasking import SamplingSettings, sample_tokens
from conftest import perturbed_sampler, tiny_mdlm
from kernel_common import requires_triton
from test_generate_exactness import chi2_pvalue, enumerate_k1_joint, product_of_marginals

MASK = 3
PROMPTS = [[1, 5, 6, 7], [1, 8], [1, 9, MASK, 10]]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def model():
    # peaked enough for several commits per forward at these τ / γ, never degenerate (min entropy ≈ 1.2 nats)
    return tiny_mdlm(vocab_size=12, seed=1, sharpen=16.0, mix=10.0)


@pytest.fixture(scope="module")
def sampler(model):
    return perturbed_sampler(model, seed=1)


class FavouriteTokenJudge(ARJudge):
    """A judge that likes one token (logit +2) and is indifferent between the rest."""

    def __init__(self, vocab_size: int, token: int) -> None:
        self.vocab_size, self.token = vocab_size, token

    def next_token_logits(self, ids, attention_mask):
        z = torch.zeros(*ids.shape, self.vocab_size)
        z[..., self.token] = 2.0
        return z


def _gen(model, **kw):
    kw = {"max_new_tokens": 6, "temperature": 0.0, "seed": 5, "return_history": True, **kw}
    return adjust.generate(model, PROMPTS, **kw)


def _same(a, b):
    assert torch.equal(a.sequences, b.sequences)
    assert torch.equal(a.commit_pass, b.commit_pass)
    assert a.base_forwards == b.base_forwards and a.sampler_passes == b.sampler_passes


def _forwards(out):
    """(state before the forward, its pass records) per base forward, in order."""
    x = out.sequences.clone()
    x[out.commit_pass >= 0] = MASK
    by = defaultdict(list)
    for rec in out.history:
        by[rec.base_forward].append(rec)
    for f in sorted(by):
        yield x.clone(), by[f]
        for rec in by[f]:
            for b, (ps, ts) in enumerate(zip(rec.positions, rec.tokens)):
                x[b, ps] = torch.tensor(ts, dtype=x.dtype)


def _probs(adapter, h):
    z = adapter.logits(h).float()
    z[..., MASK] = float("-inf")
    return torch.softmax(z, -1)


def _candidates(x, attn, end):
    return (x == MASK) & attn.bool() & (torch.arange(x.shape[1]) < end)


def _block_end(out, x, block):
    """The end of the block the next base forward works in."""
    P, total = out.prompt_length, out.sequences.shape[1]
    for end in ([total] if block is None else range(P + block, total + 1, block)):
        if bool(_candidates(x, out.attention_mask, end).any()):
            return end
    raise AssertionError("no candidates left")


def _score_order(scores, cand_row):
    """Candidate positions of a row by score, best first, ties to the lower position."""
    idx = cand_row.nonzero().flatten()
    keys = scores[idx]
    return idx[torch.sort(keys, descending=True, stable=True).indices].tolist()


# -- limits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["confidence", "low_confidence"])
@pytest.mark.parametrize("block", [None, 3])
def test_threshold_one_is_exact_k1_at_t0(model, alg, block):
    _same(_gen(model, decoding=Threshold(1.0), alg=alg, block_length=block),
          _gen(model, K=1, alg=alg, block_length=block))


@pytest.mark.parametrize("alg", ["entropy", "margin"])
@pytest.mark.parametrize("block", [None, 3])
def test_entropy_bound_zero_is_exact_k1_at_t0(model, alg, block):
    _same(_gen(model, decoding=EntropyBound(0.0), alg=alg, block_length=block),
          _gen(model, K=1, alg=alg, block_length=block))


@pytest.mark.parametrize("decoding", [Threshold(0.0), EntropyBound(1e9)])
@pytest.mark.parametrize("block", [None, 3])
def test_no_limit_commits_each_block_in_one_forward(model, decoding, block):
    out = _gen(model, decoding=decoding, alg="confidence", block_length=block)
    assert out.base_forwards == (1 if block is None else 6 // block)
    assert out.tokens_generated == 6 + 6 + 7
    for f, (x, recs) in enumerate(_forwards(out)):
        end = _block_end(out, x, block)
        assert len(recs) == 1
        assert [sorted(p) for p in recs[0].positions] == [
            r.nonzero().flatten().tolist() for r in _candidates(x, out.attention_mask, end)]


@pytest.mark.parametrize("rule,value,alg", [("threshold", 0.3, "confidence"), ("entropy", 1.5, "entropy")])
@pytest.mark.parametrize("T", [0.0, 1.0])
def test_adaptive_with_kmax_one_is_exact(model, sampler, rule, value, alg, T):
    a = _gen(model, decoding=AdaptiveAdjust(rule, value, 1), sampler=sampler, alg=alg, temperature=T, block_length=3)
    _same(a, _gen(model, K=1, alg=alg, temperature=T, block_length=3))
    assert a.sampler_passes == 0


# -- each rule, replayed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.25, 0.4])
@pytest.mark.parametrize("block", [None, 3])
def test_threshold_commits_every_confident_candidate_and_the_best(model, tau, block):
    out = _gen(model, decoding=Threshold(tau), alg="confidence", block_length=block)
    ad, sizes = as_adapter(model), []
    assert out.sampler_passes == 0 and out.base_forwards == len(out.history)
    for x, (rec,) in _forwards(out):
        cand = _candidates(x, out.attention_mask, _block_end(out, x, block))
        conf = _probs(ad, ad.hidden(x, out.attention_mask)).max(-1).values
        for b in range(x.shape[0]):
            if not cand[b].any():
                assert rec.positions[b] == []
                continue
            order = _score_order(conf[b], cand[b])
            want = [order[0]] + [p for p in order[1:] if conf[b, p] >= tau]
            assert rec.positions[b] == want
            sizes.append(len(want))
    assert max(sizes) > 1  # the rule did commit several tokens per forward somewhere


@pytest.mark.parametrize("gamma", [1.5, 3.0])
@pytest.mark.parametrize("alg", ["entropy", "confidence"])
def test_entropy_bound_commits_the_longest_prefix_within_budget(model, gamma, alg):
    out = _gen(model, decoding=EntropyBound(gamma), alg=alg)
    ad, sizes = as_adapter(model), []
    for x, (rec,) in _forwards(out):
        cand = _candidates(x, out.attention_mask, out.sequences.shape[1])
        p = _probs(ad, ad.hidden(x, out.attention_mask))
        H = -torch.special.xlogy(p, p).sum(-1)
        score = -H if alg == "entropy" else p.max(-1).values
        for b in range(x.shape[0]):
            if not cand[b].any():
                continue
            order = _score_order(score[b], cand[b])
            n = 1
            while n < len(order) and H[b, order[: n + 1]].sum() - H[b, order[: n + 1]].max() <= gamma:
                n += 1
            assert rec.positions[b] == order[:n]
            sizes.append(n)
    assert max(sizes) > 1


def _adaptive_take(rule, value, k, order, score_row, H_row):
    """The qualifying candidates of one row at pass k, in commit order (before the budget cut)."""
    if rule == "threshold":
        ok = [q for q in order if score_row[q] >= value]
    else:
        ok = []
        for q in order:
            Hs = H_row[ok + [q]]
            if float(Hs.sum() - (Hs.max() if k == 0 else 0.0)) > value:
                break
            ok.append(q)
    if k == 0 and (not ok or ok[0] != order[0]):
        ok = [order[0]] + ok  # the fallback: the best candidate always
    return ok


@pytest.mark.parametrize("rule,value,alg", [("threshold", 0.3, "confidence"), ("entropy", 1.2, "entropy")])
def test_adaptive_commits_by_its_rule_on_the_sampler_updated_distributions(model, sampler, rule, value, alg):
    K_max = 4
    out = _gen(model, decoding=AdaptiveAdjust(rule, value, K_max), sampler=sampler, alg=alg)
    ad, attn = as_adapter(model), out.attention_mask
    passes_run = several = 0
    for x, recs in _forwards(out):
        h = ad.hidden(x, attn)
        budget = _candidates(x, attn, x.shape[1]).sum(-1).clamp(max=K_max)
        left = torch.zeros(x.shape[0], dtype=torch.bool)  # rows whose sampler pass committed nothing
        assert [r.pass_index for r in recs] == list(range(len(recs))) and len(recs) <= K_max
        for rec in recs:
            if rec.pass_index > 0:
                h = sampler(h, x, ad, attn)
            cand = _candidates(x, attn, x.shape[1])
            p = _probs(ad, h)
            H = -torch.special.xlogy(p, p).sum(-1)
            score = p.max(-1).values if rule == "threshold" else -H
            for b in range(x.shape[0]):
                if left[b] or budget[b] == 0 or not cand[b].any():
                    assert rec.positions[b] == []
                    continue
                ok = _adaptive_take(rule, value, rec.pass_index, _score_order(score[b], cand[b]), score[b], H[b])
                assert rec.positions[b] == ok[: int(budget[b])]
            for b, ps in enumerate(rec.positions):
                x[b, ps] = torch.tensor(rec.tokens[b], dtype=x.dtype)
                budget[b] -= len(ps)
                left[b] |= rec.pass_index > 0 and not ps
            several += max(len(ps) for ps in rec.positions) > 1
        passes_run += len(recs)
    # every sampler pass run either committed (it has a record) or was its step's last, empty one
    assert passes_run - out.base_forwards <= out.sampler_passes <= passes_run
    assert out.sampler_passes > 0 and several > 0


def test_edlm_with_one_draw_is_parallel(model):
    judge = FavouriteTokenJudge(12, 5)
    _same(_gen(model, decoding=EDLM(judge, K=2, num_draws=1), temperature=1.0),
          _gen(model, K=2, temperature=1.0))


def test_edlm_keeps_the_draw_the_judge_prefers(model):
    """One step commits everything (K = all): the result is the lower-NLL one of the two draws made
    with the engine's generator, replayed here."""
    judge, seed = FavouriteTokenJudge(12, 5), 9
    prompts = [[1]] * 64
    out = adjust.generate(model, prompts, max_new_tokens=6, temperature=1.0, seed=seed,
                          decoding=EDLM(judge, K=6), return_history=True)
    assert out.base_forwards == 1
    ad = as_adapter(model)
    x = torch.tensor([[1] + [MASK] * 6] * 64)
    logits = ad.logits(ad.hidden(x)[:, 1:].reshape(-1, ad.hidden_size))
    g = torch.Generator().manual_seed(seed)
    s = SamplingSettings(temperature=1.0)
    a, b = (sample_tokens(logits, s, MASK, g)[0].view(64, 6) for _ in range(2))
    full = lambda t: torch.cat([x[:, :1], t], 1)  # noqa: E731
    nll_a, nll_b = (judge.sequence_nll(full(t), torch.ones_like(x)) for t in (a, b))
    want = torch.where((nll_b < nll_a)[:, None], b, a)
    assert torch.equal(out.completions, want)
    assert (out.completions == 5).sum() > (a == 5).sum()  # the judge's favourite is enriched


def test_apd_weight_one_accepts_every_draft_at_t0(model):
    out = _gen(model, decoding=APD(FavouriteTokenJudge(12, 5), weight=1.0))
    assert out.base_forwards == 1
    _same(out, _gen(model, K=7))


def test_apd_lookahead_one_is_left_to_right_one_per_forward(model):
    out = _gen(model, decoding=APD(FavouriteTokenJudge(12, 5), weight=0.5, max_lookahead=1), temperature=1.0)
    assert out.base_forwards == 7
    for b in range(3):
        masked = (out.commit_pass[b] >= 0).nonzero().flatten()
        assert torch.all(out.commit_pass[b, masked].diff() > 0)  # committed in position order


@pytest.mark.parametrize("weight", [0.3, 0.6])
def test_apd_commits_the_prefix_that_agrees_with_the_mixture(model, weight):
    judge = FavouriteTokenJudge(12, 5)
    out = _gen(model, decoding=APD(judge, weight=weight))
    ad, attn, sizes = as_adapter(model), out.attention_mask, []
    for x, (rec,) in _forwards(out):
        cand = _candidates(x, attn, x.shape[1])
        z = ad.logits(ad.hidden(x, attn)).float()
        z[..., MASK] = float("-inf")
        draft = torch.where(cand, z.argmax(-1), x)
        target = (weight * z + (1 - weight) * judge.next_token_logits(draft, attn)).argmax(-1)
        for b in range(x.shape[0]):
            idx = cand[b].nonzero().flatten().tolist()
            n = 1 if idx else 0
            while n < len(idx) and draft[b, idx[n]] == target[b, idx[n]]:
                n += 1
            assert rec.positions[b] == idx[:n]
            sizes.append(n)
    assert max(sizes) > 1 and min(s for s in sizes if s) == 1


def test_bad_policy_settings_are_refused(model, sampler):
    with pytest.raises(ValueError, match="alg must be one of"):
        _gen(model, decoding=Threshold(0.9))  # alg entropy is not a probability
    with pytest.raises(ValueError, match="needs a sampler"):
        _gen(model, decoding=AdaptiveAdjust("entropy", 1.0, 4))
    with pytest.raises(ValueError, match="runs no sampler passes"):
        _gen(model, decoding=EntropyBound(1.0), sampler=sampler)
    with pytest.raises(ValueError, match="leave K at 1"):
        _gen(model, decoding=EntropyBound(1.0), K=4)
    with pytest.raises(ValueError, match="block_length is not supported"):
        _gen(model, decoding=EDLM(FavouriteTokenJudge(12, 5), K=2), block_length=3)
    with pytest.raises(TypeError, match="decoding must be"):
        _gen(model, decoding="threshold")
    for bad in (lambda: Threshold(-0.1), lambda: EntropyBound(float("nan")), lambda: AdaptiveAdjust("x", 1, 2),
                lambda: AdaptiveAdjust("entropy", 1, 0), lambda: APD(FavouriteTokenJudge(12, 5), 1.5),
                lambda: Parallel(0), lambda: EDLM(FavouriteTokenJudge(12, 5), 2, num_draws=0)):
        with pytest.raises(ValueError):
            bad()


# -- distributions at T = 1 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return tiny_mdlm(vocab_size=7, seed=3, sharpen=6.0, mix=3.0)


def _samples(model, **kw):
    out = adjust.generate(model, [[1]] * 20_000, max_new_tokens=3, temperature=1.0, seed=4321, **kw)
    return [tuple(r) for r in out.sequences.tolist()]


def test_entropy_bound_zero_samples_the_exact_joint(small):
    ad = as_adapter(small)
    samples = _samples(small, decoding=EntropyBound(0.0))
    assert chi2_pvalue(samples, enumerate_k1_joint(ad, [1], 3)) > 1e-3
    assert chi2_pvalue(samples, product_of_marginals(ad, [1], 3)) < 1e-6


def test_threshold_zero_samples_the_product_of_marginals(small):
    ad = as_adapter(small)
    samples = _samples(small, decoding=Threshold(0.0), alg="confidence")
    assert chi2_pvalue(samples, product_of_marginals(ad, [1], 3)) > 1e-3
    assert chi2_pvalue(samples, enumerate_k1_joint(ad, [1], 3)) < 1e-6


# -- the fused static-shape form ------------------------------------------------------------------------


@requires_triton
@pytest.mark.parametrize("rule,value,alg,options", [("threshold", 0.3, "confidence", {}),
                                                    ("entropy", 1.2, "entropy", {"block_length": 3}),
                                                    ("threshold", 0.3, "confidence", {"cache_context": True})])
def test_fused_adaptive_loop_equals_the_torch_policy_at_t0(model, sampler, rule, value, alg, options):
    kw = dict(decoding=AdaptiveAdjust(rule, value, 4), sampler=sampler, alg=alg, **options)
    fused, eager = _gen(model, backend="triton", **kw), _gen(model, backend="torch", **kw)
    assert torch.equal(fused.sequences, eager.sequences)
    assert torch.equal(fused.commit_pass, eager.commit_pass)
    assert [(r.base_forward, r.pass_index, r.positions, r.tokens) for r in fused.history] == \
        [(r.base_forward, r.pass_index, r.positions, r.tokens) for r in eager.history]
    assert fused.sampler_passes == 3 * fused.base_forwards  # static: every step runs K_max passes


@requires_triton
@pytest.mark.parametrize("rule,value,alg", [("threshold", 0.3, "confidence"), ("entropy", 2.5, "entropy")])
def test_adaptive_loop_triton_equals_its_torch_twin_at_t1(model, sampler, rule, value, alg):
    from adjust_kernels.adaptive_loop import AdaptiveAdjustLoop

    ad = as_adapter(model)
    x0 = torch.tensor([[1, 5, MASK, MASK, 7, MASK, MASK, MASK, MASK], [0, 0, 1, MASK, MASK, 8, MASK, MASK, MASK]])
    attn = (x0 != 0).long()
    cand = (x0 == MASK)
    C = int(cand.sum(-1).max())
    order = torch.sort(cand.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :C]
    h0 = ad.hidden(x0, attn)
    outs = []
    for backend in ("torch", "triton"):
        loop = AdaptiveAdjustLoop(sampler, ad.embed_tokens.weight, ad.lm_head_weight, ad.lm_head_bias, rule=rule,
                                  value=value, batch_size=2, seq_len=9, num_candidates=C, num_passes=4,
                                  temperature=1.0, alg=alg, mask_token_id=MASK, attention_mask=attn, backend=backend)
        x, alive = x0.clone(), cand.gather(1, order).contiguous()
        pos, lq = loop(h0, x, torch.where(alive, order, -1), alive, cand.sum(-1).clamp(max=4),
                       torch.tensor([7, 0]))
        outs.append((x, pos.clone(), lq.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    torch.testing.assert_close(outs[0][2], outs[1][2])
    assert (outs[0][1] >= 0).sum(-1).max() > 1  # some pass committed several tokens
