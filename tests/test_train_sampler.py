"""Trajectory data (Alg. 2) and sampler training: loss = independent KL, resume, toy joint."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import adjust
from adjust.models.adapter import as_adapter
from adjust.models.toy import FiniteJointLM
from adjust.sampler import AdjustSampler
from adjust.train.rollouts import rollout_states
from adjust.train.sampler import SamplerTrainConfig, rollout_kl, train_sampler
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories, unmask_ranks
from conftest import saved_base_and_data, tiny_mdlm

MASK = 3


def test_unmask_ranks():
    cp = torch.tensor([[-1, 5, 2, 9, -1], [-1, 0, 1, 2, 3]])
    assert unmask_ranks(cp).tolist() == [[-1, 1, 0, 2, -1], [-1, 0, 1, 2, 3]]


def test_trajectories_rebuild_the_k1_states(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    s = TrajectorySettings(num_sequences=5, gen_length=6, shard_size=2, seed=3)
    generate_trajectories(model, [[1], [1, 7]], tmp_path, s, progress=False)
    tr = load_trajectories(tmp_path)
    assert len(tr) == 5 and tr.num_steps.tolist() == [6] * 5
    # replaying the K=1 run of shard 0 pass by pass gives exactly the stored ranks
    out = adjust.generate(model, [[1], [1, 7]], K=1, max_new_tokens=6, seed=3, return_history=True)
    for b in range(2):
        order = [r.positions[b][0] for r in out.history]
        ranks = tr.rank[b][out.sequences.shape[1] - tr.rank[b].shape[0]:]
        assert [int((ranks == k).nonzero()) for k in range(6)] == [p - (out.sequences.shape[1] - ranks.shape[0]) for p in order]
    meta = json.loads((tmp_path / "manifest.json").read_text())
    assert meta["settings"]["temperature"] == 1.0 and len(meta["shards"]) == 3


def test_trajectory_generation_resumes_without_duplicates_or_loss(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    s = TrajectorySettings(num_sequences=7, gen_length=5, shard_size=3, seed=0)
    full = generate_trajectories(model, None, tmp_path / "a", s, progress=False)
    # interrupted run: shard 1 lost mid-write (no manifest entry, a stray temp file)
    part = generate_trajectories(model, None, tmp_path / "b", s, progress=False)
    man = json.loads((part / "manifest.json").read_text())
    man["shards"] = [sh for sh in man["shards"] if sh["index"] != 1]
    (part / "manifest.json").write_text(json.dumps(man))
    (part / "shard-00001.safetensors").rename(part / "shard-00001.safetensors.tmp")
    generate_trajectories(model, None, part, s, progress=False)
    for i in range(3):
        a = load_file(str(full / f"shard-{i:05d}.safetensors"))
        b = load_file(str(part / f"shard-{i:05d}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(load_trajectories(part)) == 7
    with pytest.raises(ValueError, match="other settings"):
        generate_trajectories(model, None, part, TrajectorySettings(num_sequences=7, gen_length=4), progress=False)


def test_corrupted_shard_is_detected(tmp_path):
    model = tiny_mdlm(vocab_size=12)
    generate_trajectories(model, None, tmp_path, TrajectorySettings(num_sequences=2, gen_length=3), progress=False)
    f = tmp_path / "shard-00000.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(ValueError, match="shard-00000"):
        load_trajectories(tmp_path)


def test_fresh_sampler_loss_equals_independent_kl(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, [[1], [1, 9, 10]], tmp_path, TrajectorySettings(num_sequences=4, gen_length=7),
                          progress=False)
    tr = load_trajectories(tmp_path)
    ad = as_adapter(model)
    xs, attn = rollout_states(tr, [0, 1, 3], [0, 2, 3], 3, MASK, 0)
    loss, base = rollout_kl(AdjustSampler.from_base(model), ad, xs, attn)
    # independent: q_j = p(x_t) for a fresh sampler; KL over positions masked in x_{t+j}
    expect = 0.0
    for j in range(1, 4):
        terms = []
        for b in range(3):
            keep = attn[b].bool()
            logp = F.log_softmax(_logits(model, xs[j, b][keep]), -1)
            logq = F.log_softmax(_logits(model, xs[0, b][keep]), -1)
            m = xs[j, b][keep] == MASK
            terms.append((logp.exp() * (logp - logq)).sum(-1)[m])
        expect += torch.cat(terms).mean().item()
    assert loss.item() == pytest.approx(expect, rel=1e-4, abs=1e-6)
    assert base.item() == pytest.approx(expect, rel=1e-4, abs=1e-6)
    assert expect > 1e-3


@pytest.mark.parametrize("inputs", ["all", "new"])
def test_skipped_passes_move_h_but_carry_no_loss_or_gradient(tmp_path, inputs):
    """rollout_kl(skip=m): g runs the first m passes on the teacher-forced tokens without gradient, and the
    loss and gradient are those of the R passes after them (passes m + 1 .. m + R of the step)."""
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, None, tmp_path, TrajectorySettings(num_sequences=5, gen_length=9), progress=False)
    tr, ad = load_trajectories(tmp_path), as_adapter(model)
    torch.manual_seed(1)
    g = AdjustSampler.from_base(model, inputs=inputs).double()
    with torch.no_grad():
        g.norm_out.weight.uniform_(0.2, 0.6)  # a trained-looking gate: every pass moves h
    model.double()
    skip, R = 2, 2
    xs, attn = rollout_states(tr, [0, 2, 4], [0, 1, 3], skip + R, MASK, 0)
    loss, _ = rollout_kl(g, ad, xs, attn, skip=skip)
    grads = torch.autograd.grad(loss, list(g.parameters()), allow_unused=True)

    h = ad.hidden(xs[0], attn)
    with torch.no_grad():
        for j in range(1, skip + 1):
            h = g(h, g.input_tokens(xs[j], xs[0], MASK), ad, attn)
    expect = torch.zeros((), dtype=torch.float64)
    for j in range(skip + 1, skip + R + 1):
        h = g(h, g.input_tokens(xs[j], xs[0], MASK), ad, attn)
        m = (xs[j] == MASK) & attn.bool()
        logp = F.log_softmax(_masked(ad.logits(ad.hidden(xs[j], attn))[m]), -1)
        logq = F.log_softmax(_masked(ad.logits(h)[m]), -1)
        expect = expect + (logp.exp() * (logp - logq)).sum(-1).mean()
    want = torch.autograd.grad(expect, list(g.parameters()), allow_unused=True)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)  # the loss's log-softmax runs in fp32
    for a, b in zip(grads, want):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-4, atol=1e-7))
    whole, _ = rollout_kl(g, ad, xs, attn)  # every pass trained: another loss (the skipped passes count)
    assert abs(whole.item() - loss.item()) > 1e-6
    with pytest.raises(ValueError, match="skip"):
        rollout_kl(g, ad, xs, attn, skip=skip + R)


@pytest.mark.parametrize("flag, field, value", [(["--deep", "0.5"], "deep", 0.5), (["--rollout-mix"], "rollout_mix", True),
                                               (["--kl-weight", "state"], "kl_weight", "state"),
                                               (["--sampler-positions", "0"], "positions", 0),
                                               (["--adam-beta2", "0.99"], "adam_beta2", 0.99),
                                               (["--cpu-precision", "bf16"], "cpu_precision", "bf16")])
def test_the_cli_passes_the_training_options_to_the_run(tmp_path, flag, field, value):
    from adjust.cli import main

    base, data = saved_base_and_data(tmp_path, num_sequences=16, gen_length=6)
    main(["train-sampler", "--base", str(base), "--data", str(data), "--out", str(tmp_path / "s"),
          "--steps", "2", "--batch-size", "4", "--readout-prompts", "0", "--threads", "1", "--sampler-inputs", "all",
          *flag])
    start = json.loads((tmp_path / "s" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["train"][field] == value


def _masked(z):
    z = z.clone()
    z[..., MASK] = -1e4
    return z


def test_deep_draws_the_skipped_passes_uniformly_over_the_passes_past_r():
    from adjust.train.sampler import _deep_skip

    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    assert [_deep_skip(SamplerTrainConfig(), g) for _ in range(5)] == [0] * 5
    assert torch.equal(g.get_state(), before)  # no draw: runs without the option keep their data order
    n, cfg = 6000, SamplerTrainConfig(rollout=3, deep=0.5)
    draws = torch.tensor([_deep_skip(cfg, g) for _ in range(n)])
    counts = torch.bincount(draws, minlength=5).double()
    assert counts.numel() == 5  # m in 0 .. R + 1
    expect = torch.tensor([0.5, 0.125, 0.125, 0.125, 0.125], dtype=torch.float64) * n
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 18.5  # chi-square, 4 degrees of freedom: p ≈ 0.001
    with pytest.raises(ValueError, match="deep"):
        train_sampler(tiny_mdlm(vocab_size=12), None, None, SamplerTrainConfig(deep=1.5), progress=False)


def test_rollout_mix_draws_k_uniformly_over_the_readout_ks():
    from adjust.train.sampler import _step_rollout

    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    assert [_step_rollout(SamplerTrainConfig(rollout=3), g) for _ in range(5)] == [3] * 5
    assert torch.equal(g.get_state(), before)  # no draw: runs without the option keep their data order
    n, cfg = 6000, SamplerTrainConfig(rollout=3, rollout_mix=True)
    draws = torch.tensor([_step_rollout(cfg, g) for _ in range(n)])
    assert set(draws.tolist()) == {1, 3, 7}  # K − 1 for K = 2, R + 1, 2(R + 1)
    counts = torch.stack([(draws == k).sum() for k in (1, 3, 7)]).double()
    chi2 = float(((counts - n / 3) ** 2 / (n / 3)).sum())
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom: p ≈ 0.001
    with pytest.raises(ValueError, match="rollout_mix and deep"):
        train_sampler(tiny_mdlm(vocab_size=12), None, None, SamplerTrainConfig(rollout_mix=True, deep=0.5),
                      progress=False)


def test_rollout_mix_trains_on_the_mean_kl_of_the_drawn_passes(tmp_path, monkeypatch):
    """One step of a mixed run: the loss is rollout_kl over the drawn K − 1 passes, divided by their number."""
    import adjust.train.sampler as ts

    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=24, gen_length=9),
                          progress=False)
    tr = load_trajectories(tmp_path / "d")
    seen, real = [], ts.rollout_kl

    def spy(sampler, adapter, xs, attn, *a, **kw):
        loss, base = real(sampler, adapter, xs, attn, *a, **kw)
        if kw.get("baseline") is False:  # the training step's call
            seen.append((xs.shape[0] - 1, loss.item()))
        return loss, base

    monkeypatch.setattr(ts, "rollout_kl", spy)
    steps = []
    monkeypatch.setattr(ts.torch.Tensor, "backward", lambda self, *a, **kw: steps.append(self.item()))
    cfg = SamplerTrainConfig(steps=12, batch_size=4, readout_prompts=0, heldout_examples=4, on_policy=0,
                             rollout_mix=True, sampler_inputs="all")
    train_sampler(model, tr, tmp_path / "s", cfg, progress=False)
    assert {p for p, _ in seen} == {1, 3, 7}  # every readout K's passes were trained in 12 steps (p ≈ 0.98)
    for (passes, summed), loss in zip(seen, steps):
        assert loss == pytest.approx(summed / passes, rel=1e-6)


def _logits(model, ids):
    return _masked(model(ids[None])[0].double())


@pytest.mark.parametrize("options", [{}, {"on_policy": 0.5, "windows": 2, "focus": 0.3, "pool_size": 6,
                                        "pool_every": 3, "gate_init": 0.05},
                                     {"deep": 0.6, "on_policy": 0.5, "pool_size": 6, "pool_every": 3},
                                     {"rollout_mix": True}])
def test_training_resumes_to_the_same_state(tmp_path, options):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=40, gen_length=6),
                          progress=False)
    tr = load_trajectories(tmp_path / "d")
    cfg = SamplerTrainConfig(steps=8, batch_size=4, eval_every=4, heldout_examples=8, lr=1e-2, readout_prompts=8,
                             **options)
    a = train_sampler(model, tr, tmp_path / "a", cfg, progress=False)
    train_sampler(model, tr, tmp_path / "b", cfg, progress=False, stop_after=3)  # "killed" after step 3
    b = train_sampler(model, tr, tmp_path / "b", cfg, progress=False)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k
    assert not torch.equal(a.norm_out.weight, torch.zeros_like(a.norm_out.weight))
    with pytest.raises(ValueError, match="other training settings"):
        train_sampler(model, tr, tmp_path / "b", SamplerTrainConfig(steps=9, batch_size=4), progress=False)


def _as_recorded_before(run, setting: str) -> None:
    """Remove ``setting`` from a run folder's job record and training state, as a version before it wrote them."""
    job = json.loads((run / "job.json").read_text())
    del job["inputs"]["train"][setting]
    (run / "job.json").write_text(json.dumps(job))
    state = torch.load(run / "train_state.pt", weights_only=False)
    del state["config"][setting]
    torch.save(state, run / "train_state.pt")


def _tiny_model_and_data(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=30, gen_length=6),
                          progress=False)
    return model, load_trajectories(tmp_path / "d")


_TINY_RUN = dict(steps=6, batch_size=4, eval_every=3, heldout_examples=8, readout_prompts=0, sampler_inputs="all")


@pytest.mark.parametrize("setting, old, other", [("kl_weight", "position", "state"),  # added as its default
                                                 ("positions", 0, 16),  # OLD_BEHAVIOUR: the default changed
                                                 ("adam_beta2", 0.999, 0.95),
                                                 ("cpu_precision", "fp32", "bf16")])
def test_a_run_recorded_before_a_setting_existed_resumes_with_its_old_behaviour_only(tmp_path, setting, old, other):
    """A run interrupted under an older version, whose job record and training state lack a setting added since,
    reads it as the old behaviour: it resumes with that value to the same weights as an uninterrupted run, and
    any other value (for `positions` and `adam_beta2`, today's default) is refused, naming the setting."""
    assert setting not in SamplerTrainConfig.OLD_BEHAVIOUR or SamplerTrainConfig.OLD_BEHAVIOUR[setting] == old
    model, tr = _tiny_model_and_data(tmp_path)
    cfg = SamplerTrainConfig(**_TINY_RUN, **{setting: old})
    a = train_sampler(model, tr, tmp_path / "a", cfg, progress=False)
    train_sampler(model, tr, tmp_path / "b", cfg, progress=False, stop_after=2)
    _as_recorded_before(tmp_path / "b", setting)
    with pytest.raises(ValueError, match=f"{setting}: {old!r} recorded, {other!r} given"):
        train_sampler(model, tr, tmp_path / "b", replace(cfg, **{setting: other}), progress=False)
    b = train_sampler(model, tr, tmp_path / "b", cfg, progress=False)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k


def test_the_default_trains_absolute_positions_and_saves_them(tmp_path):
    model, tr = _tiny_model_and_data(tmp_path)
    assert train_sampler(model, tr, tmp_path / "a", SamplerTrainConfig(**_TINY_RUN, positions=0),
                         progress=False).pos_proj is None
    c = train_sampler(model, tr, tmp_path / "c", SamplerTrainConfig(**_TINY_RUN), progress=False)
    assert c.position_frequencies == 16 and c.pos_proj.weight.abs().sum() > 0
    assert AdjustSampler.from_pretrained(tmp_path / "c").position_frequencies == 16


def test_the_optimizer_runs_the_given_adam_beta2_and_refuses_one_outside_0_1(tmp_path):
    model, tr = _tiny_model_and_data(tmp_path)
    a = train_sampler(model, tr, tmp_path / "a", SamplerTrainConfig(**_TINY_RUN, adam_beta2=0.999), progress=False)
    assert SamplerTrainConfig().adam_beta2 == 0.95
    c = train_sampler(model, tr, tmp_path / "c", SamplerTrainConfig(**_TINY_RUN), progress=False)
    for run, beta2 in (("a", 0.999), ("c", 0.95)):
        state = torch.load(tmp_path / run / "train_state.pt", weights_only=False)
        assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, beta2)
    assert any(not torch.allclose(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="adam_beta2 must be in"):
            train_sampler(model, tr, tmp_path / "e", SamplerTrainConfig(**_TINY_RUN, adam_beta2=bad), progress=False)


def _two_sentences():
    vocab = ["[PAD]", "[BOS]", "[EOS]", "[MASK]"] + "the cat sat on mat dog ran in yard".split()
    ids = {w: i for i, w in enumerate(vocab)}
    s1 = [1] + [ids[w] for w in "the cat sat on the mat".split()]
    s2 = [1] + [ids[w] for w in "the dog ran in the yard".split()]
    return FiniteJointLM([s1, s2]), s1, s2


def test_trained_sampler_stops_parallel_mixing_on_a_toy_joint(tmp_path):
    torch.manual_seed(0)
    model, s1, s2 = _two_sentences()
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=256, gen_length=6,
                                                                          shard_size=256), progress=False)
    # the paper's teacher-forced objective and g: 800 steps leave 0.3-0.4% mixed over two seeds (with AdamW's
    # beta2 0.999, 2%; 400 steps: 5-10%)
    cfg = SamplerTrainConfig(rollout=3, steps=800, batch_size=32, lr=3e-3, eval_every=800, windows=1,
                             on_policy=0.0, sampler_inputs="all")
    g = train_sampler(model, load_trajectories(tmp_path / "d"), tmp_path / "s", cfg, progress=False)
    assert g.extra["heldout_kl"] < 0.01 * g.extra["parallel_kl"]

    def mixed(sampler):
        out = adjust.generate(model, batch_size=1000, K=2, sampler=sampler, max_new_tokens=6, seed=1)
        return sum(r not in (s1, s2) for r in out.sequences.tolist()) / 1000

    par, adj = mixed(None), mixed(g)
    assert par > 0.4  # product of marginals mixes the sentences half the time
    assert adj < 0.02


def test_the_saved_sampler_is_the_best_readout(tmp_path, monkeypatch):
    from adjust.train import readiness, sampler as sampler_module

    scores = iter([0.2, 0.9, 0.4, 0.9, 0.1])  # closed(K) of the 5 evaluations: the 2nd is best (ties keep the first)

    class FakeProbe:  # the readout's numbers are given, the selection is what is tested
        def __init__(self, *args, **kw):
            self.Ks = (4, 8)

        def __call__(self, g, step):
            c = next(scores)
            return readiness.Readout(step, self.Ks, {4: 1 - c, 8: 1 - c}, {4: 1.0, 8: 1.0})

    monkeypatch.setattr(sampler_module, "ReadinessProbe", FakeProbe)
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=40, gen_length=6),
                          progress=False)
    cfg = SamplerTrainConfig(steps=10, batch_size=4, eval_every=2, heldout_examples=8, lr=3e-2, sampler_inputs="all")
    g = train_sampler(model, load_trajectories(tmp_path / "d"), tmp_path / "s", cfg, progress=False)
    recs = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()][1:]
    assert [r["kept_step"] for r in recs] == [2, 4, 4, 4, 4]
    saved = AdjustSampler.from_pretrained(tmp_path / "s")
    assert saved.extra["readiness"]["step"] == 4 == g.extra["readiness"]["step"] == saved.extra["steps"]
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), g.state_dict().values()))
    # the saved weights are step 4's, not the last step's (train_state.pt holds those)
    last = torch.load(tmp_path / "s" / "train_state.pt", weights_only=False)["sampler"]
    assert any(not torch.equal(v, last[k]) for k, v in saved.state_dict().items())


def test_evaluations_run_every_interval_and_at_the_end_but_not_twice_at_the_end(tmp_path):
    cfg = SamplerTrainConfig(budget=400_000).resolved()
    assert (cfg.steps, cfg.eval_every) == (1563, 195)
    assert [s for s in range(1, cfg.steps + 1) if cfg.evaluates_after(s)] == [195 * i for i in range(1, 8)] + [1563]
    assert cfg.evaluations() == [195 * i for i in range(1, 8)] + [1563]
    even = SamplerTrainConfig(steps=1600, batch_size=8).resolved()  # the last interval's evaluation is the last one
    assert [s for s in range(1, 1601) if even.evaluates_after(s)] == [200 * i for i in range(1, 9)] == even.evaluations()
    late = SamplerTrainConfig(steps=10, batch_size=8, eval_every=7).resolved()
    assert [s for s in range(1, 11) if late.evaluates_after(s)] == [10] and late.evaluations() == [10]
    # and the run logs exactly those evaluations
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=24, gen_length=5),
                          progress=False)
    run = SamplerTrainConfig(steps=13, batch_size=4, eval_every=4, heldout_examples=4, readout_prompts=0,
                             sampler_inputs="all")
    train_sampler(model, load_trajectories(tmp_path / "d"), tmp_path / "s", run, progress=False)
    logged = [json.loads(x) for x in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "step" in r] == [4, 8, 13]


def test_gate_lr_scale_gives_the_output_gate_its_own_rate():
    from adjust.train.config import SamplerTrainConfig
    from adjust.train.sampler import sampler_optimizer

    g = AdjustSampler.from_base(tiny_mdlm(vocab_size=12))
    assert len(sampler_optimizer(g, SamplerTrainConfig()).param_groups) == 1  # the default: one rate for all
    groups = sampler_optimizer(g, SamplerTrainConfig(gate_lr_scale=10.0)).param_groups
    assert [gr["lr_scale"] for gr in groups] == [1.0, 10.0]
    assert groups[1]["params"] == [g.norm_out.weight]
    assert sum(len(gr["params"]) for gr in groups) == len(list(g.parameters()))


def test_gate_init_sets_the_gate_a_fresh_run_starts_from(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=12, gen_length=5),
                          progress=False)
    tr = load_trajectories(tmp_path / "d")
    still = dict(steps=1, batch_size=4, eval_every=1, heldout_examples=4, readout_prompts=0, lr=0.0)  # lr 0: no move
    g = train_sampler(model, tr, tmp_path / "a", SamplerTrainConfig(gate_init=0.25, **still), progress=False)
    assert torch.equal(g.norm_out.weight, torch.full_like(g.norm_out.weight, 0.25))
    g0 = train_sampler(model, tr, tmp_path / "b", SamplerTrainConfig(**still), progress=False)
    assert torch.equal(g0.norm_out.weight, torch.zeros_like(g0.norm_out.weight))  # the default: exactly parallel


def test_gate_lr_fade_takes_the_gate_multiplier_linearly_to_one():
    from adjust.train.config import SamplerTrainConfig
    from adjust.train.sampler import group_lr_scale

    held = SamplerTrainConfig(gate_lr_scale=3.0, steps=100).resolved()
    assert [group_lr_scale(3.0, s, held) for s in (0, 50, 99)] == [3.0, 3.0, 3.0]
    fade = SamplerTrainConfig(gate_lr_scale=3.0, gate_lr_fade=0.25, steps=100).resolved()
    assert [group_lr_scale(3.0, s, fade) for s in (0, 5, 25, 60)] == pytest.approx([3.0, 2.6, 1.0, 1.0])
    assert group_lr_scale(1.0, 5, fade) == 1.0  # the other weights' group keeps the common rate
    with pytest.raises(ValueError, match="gate_lr_fade"):
        train_sampler(tiny_mdlm(vocab_size=12), None, None, SamplerTrainConfig(gate_lr_fade=1.5), progress=False)
