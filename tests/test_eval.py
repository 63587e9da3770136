"""Evaluation: the per-step joint KL against closed forms, the driver's records and summaries."""

import json
import math

import pytest
import torch

import adjust
from adjust.data.testbed import Prompt
from adjust.eval import EvalConfig, evaluate, gap_closed, per_step_joint_kl, summarize
from adjust.models.toy import FiniteJointLM
from adjust.sampler import AdjustSampler
from adjust.unmasking import SamplingSettings
from conftest import tiny_mdlm

A, B = 4, 5


def _pair_model():
    # p(a,a) = p(b,b) = 0.4, p(a,b) = p(b,a) = 0.1: marginals are uniform
    return FiniteJointLM([[1, A, A], [1, B, B], [1, A, B], [1, B, A]], weights=[0.4, 0.4, 0.1, 0.1])


def test_joint_kl_is_zero_for_k1():
    m = _pair_model()
    out = adjust.generate(m, batch_size=500, K=1, max_new_tokens=2, seed=0, return_history=True)
    kl = per_step_joint_kl(m, out, SamplingSettings(temperature=1.0))
    assert kl["joint_kl_tokens"] == 1000
    assert abs(kl["joint_kl"]) < 1e-9


def test_joint_kl_matches_the_closed_form_for_parallel_k2():
    m = _pair_model()
    out = adjust.generate(m, batch_size=20000, K=2, max_new_tokens=2, seed=0, return_history=True)
    kl = per_step_joint_kl(m, out, SamplingSettings(temperature=1.0))
    # q = 1/4 on each pair; KL(q || p*) = Σ q log(q/p) over 2 tokens
    exact = (2 * 0.25 * math.log(0.25 / 0.4) + 2 * 0.25 * math.log(0.25 / 0.1)) / 2
    # Monte-Carlo: sd of log q − log p* per pair is ~0.69, over 20000 pairs → se ≈ 0.0025 per token
    assert kl["joint_kl"] == pytest.approx(exact, abs=0.012)


@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.8, top_k=5, top_p=0.9)])
@pytest.mark.parametrize("K", [2, 3, 5])
def test_first_exact_gives_the_joint_kl_of_the_full_computation(K, settings):
    """Plain generation draws each base step's first token from that step's own forward: its log ratio is 0,
    so skipping its forward (first_exact) changes nothing, for ADJUST and for parallel, with prompts of
    several lengths (left padding), blocks and filtered sampling."""
    from adjust.eval.joint_kl import commit_log_ratios
    from conftest import perturbed_sampler

    m = tiny_mdlm(vocab_size=11, sharpen=3.0, mix=20.0)
    prompts = [[1, 5], [1, 6, 7, 8], [1], [1, 9, 4]]
    ss = SamplingSettings(**settings)
    for sampler in (None, perturbed_sampler(m, seed=2)):
        out = adjust.generate(m, prompts, K=K, sampler=sampler, max_new_tokens=11, block_length=11 if K == 3 else None,
                              seed=K, return_history=True, **settings)
        full = list(commit_log_ratios(m, out, ss))
        fast = list(commit_log_ratios(m, out, ss, first_exact=True))
        assert [f[0].tolist() for f in fast] == [f[0].tolist() for f in full]  # the same commits, in order
        skipped = [f for f, g in zip(full, fast) if not torch.equal(f[1], g[1]) or bool((g[1] == 0).all())]
        assert len(skipped) >= len({r.base_forward for r in out.history})  # every step's first commit, at least
        assert all(bool(f[1].abs().max() < 1e-5) for f in skipped)  # and their ratios are 0 in the full computation
        assert max(float(f[1].abs().max()) for f in full) > 0.01  # while later commits' are not
        a, b = per_step_joint_kl(m, out, ss), per_step_joint_kl(m, out, ss, first_exact=True)
        assert b["joint_kl_tokens"] == a["joint_kl_tokens"] == 4 * 11
        assert b["joint_kl"] == pytest.approx(a["joint_kl"], abs=1e-6)


def test_joint_kl_needs_history_and_is_nan_at_t0():
    m = _pair_model()
    out = adjust.generate(m, batch_size=4, K=2, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="return_history"):
        per_step_joint_kl(m, out, SamplingSettings())
    out = adjust.generate(m, batch_size=4, K=2, max_new_tokens=2, temperature=0, return_history=True)
    assert math.isnan(per_step_joint_kl(m, out, SamplingSettings(temperature=0))["joint_kl"])


class _CountTestbed:
    """A stand-in testbed: scores the fraction of tokens equal to 5."""

    name, gen_length, tokenizer = "count", 4, None

    def prompts(self, n, seed):
        return [Prompt([]) for _ in range(n)]

    def score(self, prompt, completion):
        return {"fives": sum(t == 5 for t in completion) / len(completion)}


def test_evaluate_records_every_run_with_the_required_fields():
    model = tiny_mdlm(vocab_size=10, sharpen=3.0)
    cfg = EvalConfig(Ks=(1, 2, 4), temperatures=(1.0,), seeds=2, num_samples=6, batch_size=4)
    records = evaluate(model, AdjustSampler.from_base(model), _CountTestbed(), cfg, progress=False)
    keys = {(r["method"], r["K"], r["seed"]) for r in records}
    assert keys == {(m, k, s) for s in (0, 1) for m, k in [("joint", 1), ("parallel", 2), ("parallel", 4),
                                                          ("adjust", 2), ("adjust", 4)]}
    for r in records:
        for f in ("fives", "joint_kl", "base_forwards", "sampler_passes", "tokens", "seconds", "tokens_per_s"):
            assert f in r, f
        assert r["tokens"] == 6 * 4
        assert r["base_forwards"] == 2 * math.ceil(4 / r["K"])  # two batches
    joint = [r for r in records if r["method"] == "joint"]
    assert all(abs(r["joint_kl"]) < 1e-6 for r in joint)
    rows = summarize(records, ["fives"])
    assert len(rows) == 5 and all(r["seeds"] == 2 for r in rows)


def test_gap_closed_arithmetic():
    rows = [
        {"testbed": "t", "method": "joint", "K": 1, "temperature": 1.0, "m": 0.9},
        {"testbed": "t", "method": "parallel", "K": 4, "temperature": 1.0, "m": 0.1},
        {"testbed": "t", "method": "adjust", "K": 4, "temperature": 1.0, "m": 0.7},
    ]
    assert gap_closed(rows, "m")[("t", 4, 1.0, "adjust")] == pytest.approx(0.75)


def test_unknown_method_and_missing_sampler_are_refused():
    model = tiny_mdlm(vocab_size=10)
    with pytest.raises(ValueError, match="methods"):
        evaluate(model, None, _CountTestbed(), EvalConfig(methods=("bogus",)), progress=False)
    with pytest.raises(ValueError, match="sampler"):
        evaluate(model, None, _CountTestbed(), EvalConfig(methods=("adjust",)), progress=False)


def test_report_reads_saved_records_and_labels_candidate_runs(tmp_path, capsys):
    from adjust.cli import main

    def rec(method, K, valid, seed, **kw):
        return {"testbed": "synthetic", "method": method, "K": K, "temperature": 1.0, "seed": seed, "valid": valid,
                "joint_kl": 0.0, "tokens_per_s": 10.0 * K, **kw}

    records = [r for s in range(2) for r in (rec("joint", 1, 0.9, s), rec("parallel", 4, 0.1, s),
                                             rec("adjust", 4, 0.7, s), rec("adjust", 4, 0.5, s, candidate_tokens=4),
                                             rec("adjust", 4, 0.6, s, cache_context=True))]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    main(["report", str(path)])
    out = capsys.readouterr().out
    assert "| synthetic | 1.0 | adjust top-4 | 4 | 0.500 ± 0.000 |" in out
    assert "adjust closes 75.0% of the parallel→K=1 gap in valid" in out
    assert "adjust top-4 closes 50.0% of the parallel→K=1 gap in valid" in out
    assert "adjust ctx-cache closes 62.5% of the parallel→K=1 gap in valid" in out
    with pytest.raises(SystemExit, match="--metric mauve: no record has it"):
        main(["report", str(path), "--metric", "mauve"])
    main(["report", str(path), "--metric", "joint_kl", "--plot", str(tmp_path / "p.png")])
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_evaluate_with_blocks_and_a_base_cache_labels_every_method():
    model = tiny_mdlm(vocab_size=10, sharpen=3.0)
    cfg = EvalConfig(Ks=(2,), temperatures=(1.0,), seeds=1, num_samples=4, batch_size=4, block_length=2,
                     base_cache="dual")
    records = evaluate(model, AdjustSampler.from_base(model), _CountTestbed(), cfg, progress=False)
    assert {r["method"] for r in records} == {"joint", "parallel", "adjust"}
    for r in records:
        assert r["block_length"] == 2 and r["base_cache"] == "dual"
        assert r["joint_kl"] == r["joint_kl"]  # measured (not NaN): KL(q ‖ p*) includes the cache's approximation
    assert {r["method"] for r in summarize(records, ["fives"])} == {"joint dual-cache", "parallel dual-cache",
                                                                   "adjust dual-cache"}


def test_gap_closed_of_a_base_cached_run_uses_its_own_baselines():
    rows = [{"testbed": "t", "method": m, "K": K, "temperature": 1.0, "m": v}
            for m, K, v in [("joint", 1, 0.9), ("parallel", 4, 0.1), ("adjust", 4, 0.7), ("joint dual-cache", 1, 0.5),
                            ("parallel dual-cache", 4, 0.1), ("adjust dual-cache", 4, 0.4)]]
    gaps = gap_closed(rows, "m")
    assert gaps[("t", 4, 1.0, "adjust")] == pytest.approx(0.75)
    assert gaps[("t", 4, 1.0, "adjust dual-cache")] == pytest.approx(0.75)  # (0.1 − 0.4) / (0.1 − 0.5)
