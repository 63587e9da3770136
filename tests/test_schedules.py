"""Commit schedules (`generate(schedule=...)`) and `sample_mask` on the package's own model, every backend.

Parity with the real Dream/LLaDA generation is in tests/test_hf_parity.py.
"""

import pytest
import torch
from scipy.stats import chisquare

import adjust
from adjust.decoding import Parallel, Threshold
from adjust.schedules import CommitSchedule, DreamSchedule, KPerForward, LLaDASchedule, as_schedule
from conftest import perturbed_sampler, tiny_mdlm

MASK = 3  # MDLMConfig's default mask id


def step_counts(schedule, masks: int, K: int) -> list[int]:
    """The counts a schedule gives one row of `masks` masks when every commit unmasks a token."""
    steps = schedule.steps(masks, K)
    remaining, block = torch.tensor([masks]), torch.tensor([masks])
    counts = []
    for step in range(steps):
        n = int(schedule.counts(step, steps, K, block, remaining)[0])
        counts.append(n)
        remaining = remaining - n
    assert int(remaining[0]) == 0
    return counts


def test_each_schedule_counts():
    assert step_counts(KPerForward(), 16, 3) == [3, 3, 3, 3, 3, 1]
    assert step_counts(LLaDASchedule(), 16, 3) == [3, 3, 3, 3, 2, 2]  # the remainder first, as LLaDA's generate
    assert step_counts(LLaDASchedule(), 16, 4) == [4, 4, 4, 4]
    assert step_counts(DreamSchedule(), 16, 4) == [3, 4, 4, 5]  # int(m (1 - s/t)) over linspace(1, 1e-3, 5)
    assert step_counts(DreamSchedule(), 8, 1) == [0, 1, 1, 1, 1, 1, 1, 2]  # the first forward commits nothing
    assert step_counts(DreamSchedule(eps=0.5), 8, 2) == [1, 0, 1, 6]  # 7 (1 - .75/.875) = 0.99..: truncated to 0


def test_counts_are_per_row_and_never_exceed_a_rows_candidates():
    remaining = torch.tensor([16, 9, 0])
    block = torch.tensor([16, 16, 0])
    assert DreamSchedule().counts(0, 4, 4, block, remaining).tolist() == [3, 2, 0]
    assert DreamSchedule().counts(3, 4, 4, block, remaining).tolist() == [16, 9, 0]  # the last step: all
    assert LLaDASchedule().counts(0, 6, 3, block, torch.tensor([16, 2, 0])).tolist() == [3, 2, 0]
    assert KPerForward().counts(0, 6, 3, block, remaining).tolist() == [3, 3, 0]


def test_bad_schedules_and_mask_settings_are_refused():
    model = tiny_mdlm(vocab_size=12)
    with pytest.raises(ValueError, match="schedule must be one of"):
        adjust.generate(model, K=2, max_new_tokens=4, schedule="fast")
    with pytest.raises(ValueError, match="eps must be in"):
        DreamSchedule(eps=0.0)
    with pytest.raises(TypeError, match="sample_mask must be a bool"):
        adjust.generate(model, K=2, max_new_tokens=4, sample_mask=1)
    g = adjust.AdjustSampler.from_base(model)
    with pytest.raises(ValueError, match="sample_mask reproduces .*no sampler"):
        adjust.generate(model, K=2, max_new_tokens=4, sample_mask=True, sampler=g)
    with pytest.raises(ValueError, match="sample_mask reproduces"):
        adjust.generate(model, max_new_tokens=4, sample_mask=True, decoding=Threshold(0.9))
    for schedule in ("dream", "llada"):
        with pytest.raises(ValueError, match=f"schedule='{schedule}': the triton backend's fused ADJUST loop"):
            adjust.generate(model, K=2, max_new_tokens=4, schedule=schedule, backend="triton", sampler=g)
    with pytest.raises(ValueError, match="give the schedule to the policy"):
        adjust.generate(model, max_new_tokens=4, schedule="llada", decoding=Parallel(2))
    assert as_schedule("llada") == LLaDASchedule() and as_schedule(DreamSchedule(0.1)).eps == 0.1

    class Greedy(CommitSchedule):
        name = "greedy"

        def counts(self, step, steps, K, block_masks, remaining):
            return remaining + 1

    with pytest.raises(ValueError, match=r"schedule 'greedy' asked for \[5\] commits with \[4\] candidates left"):
        adjust.generate(model, K=2, max_new_tokens=4, schedule=Greedy())


@pytest.mark.parametrize("schedule", ["k", "llada", "dream"])
@pytest.mark.parametrize("sampler", [False, True])
def test_generate_commits_the_schedules_counts(schedule, sampler):
    model = tiny_mdlm(vocab_size=20, sharpen=4.0)
    g = perturbed_sampler(model) if sampler else None
    out = adjust.generate(model, [[1, 5], [1, 6, 7, 8]], K=3, sampler=g, max_new_tokens=16, temperature=0.0,
                          schedule=schedule, return_history=True)
    per_forward = [0] * out.base_forwards
    for rec in out.history:
        per_forward[rec.base_forward] += len(rec.positions[0])
        assert all(len(p) == len(rec.positions[0]) for p in rec.positions)  # both rows: 16 masks each
    expected = step_counts(as_schedule(schedule), 16, 3)
    assert per_forward == expected and out.base_forwards == len(expected)
    assert max(expected) > 3 or schedule != "dream"  # Dream's schedule commits more than K in some forward
    assert out.sampler_passes == (sum(c - 1 for c in expected) if sampler else 0)
    assert not bool((out.sequences == MASK).any())


def test_dream_schedule_runs_dreams_steps_also_the_one_that_commits_nothing():
    model = tiny_mdlm(vocab_size=20, sharpen=4.0)
    out = adjust.generate(model, K=1, max_new_tokens=8, batch_size=2, temperature=0.0, schedule="dream",
                          return_history=True)
    assert out.base_forwards == 8 and out.tokens_generated == 16  # Dream's 8 steps; the first commits nothing
    assert min(rec.base_forward for rec in out.history) == 1


def test_a_schedule_is_a_policy_argument():
    model = tiny_mdlm(vocab_size=20, sharpen=4.0)
    kw = dict(max_new_tokens=16, batch_size=2, temperature=0.0)
    assert torch.equal(adjust.generate(model, decoding=Parallel(3, schedule="llada"), **kw).sequences,
                       adjust.generate(model, K=3, schedule="llada", **kw).sequences)
    assert repr(Parallel(3, schedule="llada")) == "Parallel(K=3, schedule='llada')" and repr(Parallel(3)) == "Parallel(K=3)"


def test_schedules_with_blocks_are_applied_per_block():
    model = tiny_mdlm(vocab_size=20, sharpen=4.0)
    out = adjust.generate(model, K=3, max_new_tokens=16, block_length=8, temperature=0.0, schedule="llada",
                          return_history=True)
    assert [len(r.positions[0]) for r in out.history] == [3, 3, 2, 3, 3, 2]
    first_block = set(p for r in out.history[:3] for p in r.positions[0])
    assert first_block == set(range(1, 9))


def mask_liking(vocab_size: int = 20):
    """A tiny model whose [MASK] logit is the largest at many positions: the head row of its most generated
    token, × 1.05, is copied to the mask's."""
    model = tiny_mdlm(vocab_size=vocab_size, sharpen=4.0, mix=4.0)
    made = adjust.generate(model, K=1, max_new_tokens=12, batch_size=4, temperature=0.0).completions
    with torch.no_grad():
        model.lm_head.weight[MASK] = 1.05 * model.lm_head.weight[int(made.flatten().mode().values)]
    return model


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
@pytest.mark.parametrize("schedule", ["k", "dream", "llada"])
def test_sample_mask_commits_mask_tokens_and_backends_agree_at_t0(backend, schedule):
    model = mask_liking()
    prompts = [[1, 9, 9], [1, 9], [1, 10, MASK, 11]]
    kw = dict(K=3, max_new_tokens=12, block_length=6, temperature=0.0, alg="low_confidence", schedule=schedule)
    ref = adjust.generate(model, prompts, sample_mask=True, **kw)
    out = adjust.generate(model, prompts, sample_mask=True, backend=backend, **kw)
    assert torch.equal(ref.sequences, out.sequences) and ref.base_forwards == out.base_forwards
    real = ref.attention_mask.bool()
    assert bool((ref.sequences == MASK)[real].any())  # committed [MASK] stays: generation still ends
    excluded = adjust.generate(model, prompts, backend=backend, **kw)
    assert not bool((excluded.sequences == MASK)[real].any())


@pytest.mark.parametrize("backend", ["cpp", "triton"])
@pytest.mark.parametrize("schedule", ["dream", "llada"])
def test_schedules_compose_with_fast_backends_and_adjust_at_t0(backend, schedule):
    model = tiny_mdlm(vocab_size=20, sharpen=4.0, mix=4.0)
    g = perturbed_sampler(model)
    prompts = [[1, 5, 6], [1, 7]]
    for sampler in (None, g):
        if backend == "triton" and sampler is not None:
            continue  # the fused ADJUST loop: refused (test_bad_schedules_and_mask_settings_are_refused)
        kw = dict(K=3, sampler=sampler, max_new_tokens=12, block_length=6, temperature=0.0, schedule=schedule)
        ref = adjust.generate(model, prompts, **kw)
        out = adjust.generate(model, prompts, backend=backend, **kw)
        assert torch.equal(ref.sequences, out.sequences)
        assert torch.equal(ref.commit_pass, out.commit_pass)


@pytest.mark.parametrize("sample_mask", [False, True])
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_sample_mask_samples_the_softmax_with_or_without_the_mask(sample_mask, backend):
    """One masked position, 6000 rows at T = 1: chi-square against softmax(logits), [MASK] kept or removed."""
    model = mask_liking(vocab_size=12)
    prompt = [1, 9, 10]
    rows = 6000
    out = adjust.generate(model, [prompt] * rows, K=1, max_new_tokens=1, temperature=1.0, sample_mask=sample_mask,
                          backend=backend, seed=0)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + [MASK]]))[0, -1].double()
    if not sample_mask:
        logits[MASK] = float("-inf")
    p = torch.softmax(logits, -1)
    counts = torch.bincount(out.sequences[:, -1], minlength=p.numel()).double()
    keep = p * rows >= 5
    assert counts[~keep].sum() <= 20 and (sample_mask or counts[MASK] == 0)
    assert not sample_mask or p[MASK] > 0.05  # the mask is a real part of the distribution here
    f_exp = p[keep] / p[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep].numpy(), f_exp.numpy()).pvalue > 1e-3
