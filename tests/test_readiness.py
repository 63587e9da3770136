"""The readiness readout: its joint KL is the exact KL(q ‖ p*) of a model whose joint can be enumerated."""

import math

import pytest
import torch

from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from adjust.train.readiness import READY_CLOSED, READY_METRIC, Readout, ReadinessProbe, verdict
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import perturbed_sampler, tiny_mdlm

MASK, BOS = 3, 1


def _log_probs(ad, x):
    z = ad.logits(ad.hidden(x)).double()
    z[..., MASK] = -math.inf
    return torch.log_softmax(z, -1)


def exact_step_kl(model, sampler) -> float:
    """KL(q ‖ p*) per token of one K=2 step that commits both tokens of [BOS, M, M] (entropy rule, T=1).

    Pass 0 takes the lower-entropy position a (deterministic) and samples x_a from the base;
    pass 1 samples x_b from the sampler's (or, without one, the same forward's) logits, so
    KL = ½ Σ_xa p_a(xa) KL(q_b(·|xa) ‖ p_b(·|xa)), enumerated over every xa.
    """
    ad = as_adapter(model)
    x = torch.tensor([[BOS, MASK, MASK]])
    with torch.no_grad():
        h0 = ad.hidden(x)
        lp = _log_probs(ad, x)[0]
        ent = -(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(-1)
        a = 1 if ent[1] <= ent[2] else 2
        b = 3 - a
        total = 0.0
        for v in range(ad.vocab_size):
            if v == MASK:
                continue
            xa = x.clone()
            xa[0, a] = v
            logp_b = _log_probs(ad, xa)[0, b]
            h1 = h0 if sampler is None else sampler(h0, xa, ad)
            z = ad.logits(h1).double()[0, b]
            z[MASK] = -math.inf
            logq_b = torch.log_softmax(z, -1)
            q = logq_b.exp()
            kl_b = float((q * (logq_b - logp_b)).nan_to_num(0.0).sum())
            total += float(lp[a, v].exp()) * kl_b
    return total / 2


@pytest.fixture
def coupled_model():
    return tiny_mdlm(vocab_size=8, sharpen=3.0, mix=20.0)


def test_readout_joint_kl_equals_the_exact_kl(tmp_path, coupled_model):
    generate_trajectories(coupled_model, None, tmp_path, TrajectorySettings(num_sequences=16, gen_length=2),
                          progress=False)
    traj = load_trajectories(tmp_path)
    sampler = perturbed_sampler(coupled_model, seed=3)
    with torch.no_grad():
        sampler.norm_out.weight.mul_(10.0)  # a sampler far from parallel, so the two KLs differ
    probe = ReadinessProbe(as_adapter(coupled_model), traj, torch.arange(len(traj)), rollout=1, num_prompts=6000,
                           batch_size=2000)
    readout = probe(sampler, step=7)
    assert probe.Ks == (2, 4) and readout.step == 7
    exact_par, exact_adj = exact_step_kl(coupled_model, None), exact_step_kl(coupled_model, sampler)
    assert exact_adj > 0.02 and exact_par > 0.02 and abs(exact_adj - exact_par) > 0.02  # the test has power
    for K in probe.Ks:  # with 2 tokens to generate, K=4 commits them in one step too
        assert readout.parallel_kl[K] == pytest.approx(exact_par, rel=0.1, abs=0.005)
        assert readout.adjust_kl[K] == pytest.approx(exact_adj, rel=0.1, abs=0.005)
        assert readout.closed(K) == pytest.approx(1 - readout.adjust_kl[K] / readout.parallel_kl[K])
    # an untrained sampler reproduces parallel sampling: about nothing closed (other draws, same distribution)
    fresh = probe(AdjustSampler.from_base(coupled_model), step=0)
    assert all(fresh.adjust_kl[K] == pytest.approx(exact_par, rel=0.1, abs=0.005) for K in probe.Ks)
    rec = readout.to_record()
    assert rec["K2"]["closed"] == round(readout.closed(2), 4) and rec["verdict"] in ("ready", "not ready")
    assert "metric" not in rec and "exact_valid" not in rec  # no testbed scorer given


def test_verdict_thresholds():
    need4, need8 = READY_CLOSED
    assert verdict({4: need4, 8: need8})[0] == "ready"
    v, why = verdict({4: need4 - 0.01, 8: 0.99})
    assert v == "not ready" and "K=4" in why and "K=8" not in why
    assert verdict({4: math.nan, 8: 1.0})[0] == "not ready"
    v, why = verdict({2: need4 - 0.01, 4: 1.0, 8: 1.0})  # K=2 (first passes only) is held to the first threshold
    assert v == "not ready" and "K=2" in why and "K=4" not in why
    assert verdict({2: need4, 4: need4, 8: need8})[0] == "ready"
    v, why = verdict({2: 0.986, 4: 0.99, 8: 0.99})  # one decimal: "98.6% < 99%", not "99% < 99%"
    assert "K=2: 98.6% < 99%" in why and "near exact sampling" in why
    assert "far from exact" in verdict({2: 0.94, 4: 0.99, 8: 0.99})[1]


def test_verdict_holds_the_testbed_metric_less_one_standard_error():
    kl = {2: 0.995, 4: 0.995, 8: 0.99}  # ready by the joint-KL thresholds
    need, need_last = READY_METRIC
    assert verdict(kl, {2: (need + 0.03, 0.02), 4: (need + 0.03, 0.02), 8: (need_last + 0.03, 0.02)}, "valid")[0] == "ready"
    # mirror's full-budget run: 89.8% of the validity gap at K=4 (256 prompts) -> not ready
    v, why = verdict(kl, {2: (0.9023, 0.0186), 4: (0.8984, 0.0189), 8: (0.8438, 0.0227)}, "valid")
    assert v == "not ready" and "K=4: 89.8% ± 1.9% vs 90%" in why and "K=8: 84" not in why and "valid" in why
    # above the target but within one standard error of it: not ready
    assert verdict(kl, {2: (need + 0.01, 0.02), 4: (0.95, 0.0), 8: (0.9, 0.0)}, "valid")[0] == "not ready"
    # a K whose gap is undefined (parallel already exact) is not held; no scorer: the KL verdict alone
    assert verdict(kl, {2: (None, None), 4: (0.95, 0.01), 8: (0.9, 0.01)}, "valid")[0] == "ready"
    assert verdict(kl)[0] == "ready"
    # the joint-KL thresholds still come first
    assert "joint KL" in verdict({2: 0.9, 4: 0.995, 8: 0.99}, {2: (1.0, 0.0), 4: (1.0, 0.0), 8: (1.0, 0.0)}, "v")[1]


def test_a_not_ready_verdict_names_the_ks_that_pass():
    need, need_last = READY_CLOSED
    # mirror's re-made base: K = 2 and 4 pass, K = 8 (passes past R) does not -> serve K <= 4
    v, why = verdict({2: need + 0.002, 4: need + 0.005, 8: 0.72})
    assert v == "not ready" and "K=8: 72.0%" in why and "serve K ≤ 4" in why
    # the smallest K fails: no K to offer
    v, why = verdict({2: need - 0.01, 4: 1.0, 8: need_last - 0.01})
    assert "serve" not in why and "train longer" in why
    # a K that fails only on the testbed's metric counts too
    kl = {2: 0.995, 4: 0.995, 8: 0.99}
    v, why = verdict(kl, {2: (0.97, 0.01), 4: (0.95, 0.01), 8: (0.40, 0.02)}, "valid")
    assert v == "not ready" and "serve K ≤ 4" in why
    v, why = verdict(kl, {2: (0.97, 0.01), 4: (0.80, 0.01), 8: (0.90, 0.02)}, "valid")
    assert "serve K ≤ 2" in why


def test_metric_closed_se_matches_its_spread():
    """The delta-method standard error of the gap closed against the spread of that share over 4000
    simulated readouts (Bernoulli samples: ADJUST p = 0.8 of 256, parallel 0.3 of 256, exact 0.95 of 256)."""
    g = torch.Generator().manual_seed(0)
    n, reps, (pa, pp, pe) = 256, 4000, (0.8, 0.3, 0.95)
    a, p, e = (torch.bernoulli(torch.full((reps, n), q, dtype=torch.float64), generator=g) for q in (pa, pp, pe))
    share = (a.mean(1) - p.mean(1)) / (e.mean(1) - p.mean(1))

    def se(x: torch.Tensor) -> float:
        return float(x.std(1).mean() / math.sqrt(n))

    readout = Readout(step=0, Ks=(4,), adjust_kl={4: 0.1}, parallel_kl={4: 1.0}, metric="valid",
                      adjust_metric={4: pa}, parallel_metric={4: pp}, exact_metric=pe,
                      adjust_metric_se={4: se(a)}, parallel_metric_se={4: se(p)}, exact_metric_se=se(e))
    assert readout.metric_closed(4) == pytest.approx((pa - pp) / (pe - pp))
    assert readout.metric_closed_se(4) == pytest.approx(float(share.std()), rel=0.1)


def test_readout_scores_with_the_testbed(tmp_path):
    from adjust.data.mirror import MirrorLanguage

    tb = MirrorLanguage(gen_length=4, n_symbols=3)
    model = tiny_mdlm(vocab_size=tb.tokenizer.get_vocab_size(), sharpen=3.0, mix=20.0)
    generate_trajectories(model, None, tmp_path, TrajectorySettings(num_sequences=40, gen_length=4), progress=False)
    traj = load_trajectories(tmp_path)
    probe = ReadinessProbe(as_adapter(model), traj, torch.arange(30, 40), rollout=1, num_prompts=64, testbed=tb)
    assert ReadinessProbe(as_adapter(model), traj, torch.arange(30, 40), rollout=3, num_prompts=4).Ks == (2, 4, 8)
    assert probe.metric == "valid"
    finals = [traj.input_ids[r][-4:].tolist() for r in list(range(30, 40)) * 7][:64]
    assert probe.exact_metric == pytest.approx(sum(tb.score(None, f)["valid"] for f in finals) / 64)
    rec = probe(perturbed_sampler(model), step=1).to_record()
    assert set(rec["K2"]) >= {"adjust_valid", "parallel_valid", "valid_closed", "valid_closed_se"} and "exact_valid" in rec
    assert probe.exact_metric_se >= 0 and (rec["K2"]["valid_closed_se"] is None or rec["K2"]["valid_closed_se"] >= 0)


def test_readout_on_unconditional_data_of_a_conditional_testbed_warns_and_keeps_the_joint_kl(tmp_path):
    """`adjust data --prompts bos` on the tasks base: no prompt is a tasks prompt, so the scorer is
    dropped with a warning that says how to get it, instead of failing the run."""
    from adjust.data import get_testbed

    tb = get_testbed("tasks")
    model = tiny_mdlm(vocab_size=tb.tokenizer.get_vocab_size(), sharpen=3.0, mix=20.0)
    generate_trajectories(model, None, tmp_path, TrajectorySettings(num_sequences=12, gen_length=6), progress=False)
    traj = load_trajectories(tmp_path)
    with pytest.warns(UserWarning, match="not tasks prompts.*--prompts testbed"):
        probe = ReadinessProbe(as_adapter(model), traj, torch.arange(8, 12), rollout=1, num_prompts=8, testbed=tb)
    assert probe.metric is None and probe.exact_metric is None
    rec = probe(perturbed_sampler(model), step=1).to_record()
    assert rec["K2"]["adjust_kl"] >= 0 and "adjust_correct" not in rec["K2"]


def test_plateau_evaluations_count_the_first_evaluations_at_parallels_kl():
    from adjust.train.readiness import plateau_evaluations

    logs = [{"event": "start"}, {"step": 10, "heldout_kl": 0.2026, "parallel_kl": 0.1997},
            {"step": 20, "heldout_kl": 0.185, "parallel_kl": 0.1997}, {"step": 30, "heldout_kl": 0.11, "parallel_kl": 0.1997},
            {"step": 40, "heldout_kl": 0.19, "parallel_kl": 0.1997}]  # a later rise is not the plateau
    assert plateau_evaluations(logs) == 2
    assert plateau_evaluations(logs[:1] + logs[3:]) == 0
    assert plateau_evaluations([]) == 0


def test_parallels_readout_is_kept_in_the_folder_and_read_back_only_for_the_same_prompts(tmp_path, monkeypatch):
    from adjust.train.readiness import PARALLEL_NAME

    model = tiny_mdlm(vocab_size=8, sharpen=3.0, mix=20.0)
    model.save_pretrained(tmp_path / "base")  # a saved base has a fingerprint
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=12, gen_length=3),
                          progress=False)
    traj, rows = load_trajectories(tmp_path / "d"), torch.arange(12)
    measured = []
    real = ReadinessProbe._measure
    monkeypatch.setattr(ReadinessProbe, "_measure",
                        lambda self, s, K: measured.append((s is None, K)) or real(self, s, K))
    sampler = perturbed_sampler(model, seed=3)
    first = ReadinessProbe(as_adapter(model), traj, rows, rollout=1, num_prompts=10, folder=tmp_path / "run")
    a = first(sampler, step=1)
    assert (tmp_path / "run" / PARALLEL_NAME).is_file() and measured.count((True, 2)) == 1
    again = ReadinessProbe(as_adapter(model), traj, rows, rollout=1, num_prompts=10, folder=tmp_path / "run")
    b = again(sampler, step=2)
    assert measured.count((True, 2)) == 1  # read back, not measured again
    assert b.parallel_kl == a.parallel_kl and b.adjust_kl == a.adjust_kl
    other = ReadinessProbe(as_adapter(model), traj, rows, rollout=1, num_prompts=7, folder=tmp_path / "run")
    c = other(sampler, step=3)
    assert measured.count((True, 2)) == 2  # other prompts: measured
    assert c.parallel_kl != a.parallel_kl
    (tmp_path / "run" / PARALLEL_NAME).write_text("{not json")  # an unreadable file is measured again
    ReadinessProbe(as_adapter(model), traj, rows, rollout=1, num_prompts=10, folder=tmp_path / "run")(sampler, 4)
    assert measured.count((True, 2)) == 3
    # a base without a fingerprint (never saved) keeps nothing: nothing would tell two such bases apart
    unsaved = tiny_mdlm(vocab_size=8, sharpen=3.0, mix=20.0, seed=1)
    ReadinessProbe(as_adapter(unsaved), traj, rows, rollout=1, num_prompts=4, folder=tmp_path / "x")(sampler, 1)
    assert not (tmp_path / "x").exists()
