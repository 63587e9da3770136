"""benchmarks.kl_by_masks_left: the teacher-forced split covers every state, the generation split sums to the joint KL."""

import pytest
import torch

import adjust
from adjust.eval.joint_kl import per_step_joint_kl
from adjust.unmasking import SamplingSettings
from benchmarks.kl_by_masks_left import joint_kl_by_masks_left, kl_by_masks_left
from conftest import perturbed_sampler, saved_base_and_data


def test_the_splits_cover_every_state_and_sum_to_the_joint_kl(tmp_path):
    base, data = saved_base_and_data(tmp_path, num_sequences=9, gen_length=7)
    model = adjust.MaskedDiffusionLM.from_pretrained(base)
    sampler = perturbed_sampler(model).save_pretrained(tmp_path / "s")
    split = kl_by_masks_left(str(base), str(sampler), str(data), n=11)
    assert list(split) == [1, 2, 3, 4, 5, 6]  # states after 1 .. 6 of 7 commits
    assert all(s["n"] == 11 for s in split.values())
    assert all(s["fwd"] >= 0 and s["rev"] >= 0 and s["mean_fwd"] >= 0 for s in split.values())
    assert split[1]["fwd"] == pytest.approx(split[1]["mean_fwd"], rel=1e-5)  # one masked position: it is the pick
    K, n = 3, 6
    by_left = joint_kl_by_masks_left(str(base), str(sampler), K, n, gen_length=7)
    assert sum(c for _, c in by_left.values()) == n * 7 and set(by_left) == set(range(1, 8))
    out = adjust.generate(model, K=K, sampler=adjust.AdjustSampler.from_pretrained(sampler), batch_size=n,
                          max_new_tokens=7, seed=0, return_history=True)
    whole = per_step_joint_kl(model, out, SamplingSettings(temperature=1.0))["joint_kl"]
    total = sum(v * c for v, c in by_left.values()) / (n * 7)
    assert total == pytest.approx(whole, rel=1e-4, abs=1e-6) and abs(whole) > 1e-4
