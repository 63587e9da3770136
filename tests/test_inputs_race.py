"""`sampler_inputs="auto"` (adjust.train.inputs_race): the rule, and that a raced run is the run of the
chosen input — the same weights as an uninterrupted run with it — recorded, resumable, and refused
on a folder of an explicit run."""

import json

import pytest
import torch

from adjust.info import describe
from adjust.sampler import AdjustSampler
from adjust.train.config import SamplerTrainConfig
from adjust.train import inputs_race
from adjust.train.inputs_race import RACE_INTERVALS, RACE_MARGIN, choose, race_record
from adjust.train.sampler import train_sampler
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import tiny_mdlm


def test_a_lead_decides_and_without_one_all_is_kept_at_the_last_evaluation():
    assert choose({"all": 0.20, "new": 0.10}) == "new"
    assert choose({"all": 0.20, "new": 0.99 * RACE_MARGIN * 0.20}) == "new"
    assert choose({"all": 0.20, "new": 1.01 * RACE_MARGIN * 0.20}) == "all"
    assert choose({"all": 0.16, "new": 0.24}) == "all"  # mirror's second run (docs/training.md)
    assert choose({"all": 0.0650, "new": 0.0636}, last=False) is None  # mirror at step 195: race on
    assert choose({"all": 0.0061, "new": 0.0206}, last=False) == "all"  # ... and at step 390
    assert choose({"all": 0.20, "new": 0.99 * RACE_MARGIN * 0.20}, last=False) == "new"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("race")
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp / "d", TrajectorySettings(num_sequences=24, gen_length=5), progress=False)
    return model, load_trajectories(tmp / "d"), tmp


def _cfg(inputs: str) -> SamplerTrainConfig:
    return SamplerTrainConfig(steps=6, batch_size=4, eval_every=2, heldout_examples=4, readout_prompts=4,
                              sampler_inputs=inputs)


def test_a_raced_run_is_the_run_of_the_chosen_input(setup):
    model, traj, tmp = setup
    g = train_sampler(model, traj, tmp / "auto", _cfg("auto"), progress=False)
    race = race_record(tmp / "auto")
    steps = [2 * (i + 1) for i in range(RACE_INTERVALS)]  # the race's evaluations (eval_every 2)
    assert race["raced"] and race["step"] == race["history"][-1]["step"] in steps
    assert race["chosen"] == g.inputs == choose(race["heldout_kl"], last=race["step"] == steps[-1])
    assert all(choose(e["heldout_kl"], last=False) is None for e in race["history"][:-1])
    assert not (tmp / "auto" / "race").exists()
    plain = train_sampler(model, traj, tmp / "plain", _cfg(g.inputs), progress=False)
    for (name, a), (_, b) in zip(g.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
    assert plain.extra["heldout_kl"] == g.extra["heldout_kl"]
    logs = [[json.loads(x) for x in (tmp / d / "train_log.jsonl").read_text().splitlines()] for d in ("auto", "plain")]
    assert [r for r in logs[0] if "step" in r][-1]["heldout_kl"] == [r for r in logs[1] if "step" in r][-1]["heldout_kl"]
    # the record reaches the saved sampler and adjust info
    assert AdjustSampler.from_pretrained(tmp / "auto").extra["inputs_race"] == race
    assert "--sampler-inputs auto" in describe(tmp / "auto")[0]["inputs"]


def test_a_finished_race_is_not_run_again(setup):
    model, traj, tmp = setup
    train_sampler(model, traj, tmp / "again", _cfg("auto"), progress=False)
    before = (tmp / "again" / "train_log.jsonl").read_text()
    cfg = SamplerTrainConfig(**{**_cfg("auto").__dict__, "steps": 8})  # extends the run, no new race
    train_sampler(model, traj, tmp / "again", cfg, progress=False)
    after = (tmp / "again" / "train_log.jsonl").read_text()
    assert after.startswith(before) and not (tmp / "again" / "race").exists()
    assert [json.loads(x) for x in after.splitlines()][-1]["step"] == 8


def test_an_interrupted_race_run_resumes_to_its_evaluation(setup):
    model, traj, tmp = setup
    out = tmp / "stopped"
    train_sampler(model, traj, out / "race" / "all", _cfg("all"), progress=False, stop_after=1)  # before its evaluation
    g = train_sampler(model, traj, out, _cfg("auto"), progress=False)
    train_sampler(model, traj, tmp / "ref", _cfg("all"), progress=False, stop_after=2)
    first = next(json.loads(x) for x in (tmp / "ref" / "train_log.jsonl").read_text().splitlines() if '"step": 2' in x)
    assert race_record(out)["history"][0]["heldout_kl"]["all"] == first["heldout_kl"]  # as if never stopped
    assert g.inputs == race_record(out)["chosen"]


def test_without_a_lead_both_race_on_and_all_is_kept(setup, monkeypatch, capsys):
    model, traj, tmp = setup
    monkeypatch.setattr(inputs_race, "RACE_MARGIN", 0.0)  # no lead is ever taken
    out = tmp / "no-lead"
    # "all" stopped inside the second interval (evaluated at step 2, checkpoint at step 3): it resumes from there
    train_sampler(model, traj, out / "race" / "all", _cfg("all"), progress=False, stop_after=3)
    g = train_sampler(model, traj, out, _cfg("auto"), progress=False)
    race = race_record(out)
    assert race["chosen"] == g.inputs == "all" and race["step"] == 2 * RACE_INTERVALS
    assert [e["step"] for e in race["history"]] == [2 * (i + 1) for i in range(RACE_INTERVALS)]
    assert "no lead at step 2" in capsys.readouterr().err
    plain = train_sampler(model, traj, tmp / "no-lead-plain", _cfg("all"), progress=False)
    for (name, a), (_, b) in zip(g.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
    logs = [[json.loads(x) for x in (d / "train_log.jsonl").read_text().splitlines()] for d in (out, tmp / "no-lead-plain")]
    assert [r["heldout_kl"] for r in logs[0] if "step" in r] == [r["heldout_kl"] for r in logs[1] if "step" in r]


def test_a_lead_at_the_second_evaluation_keeps_that_input(setup, monkeypatch):
    model, traj, tmp = setup
    # a rule that leads nowhere at step 2 and for "new" at step 4: the run is then "new"'s, from its step 4
    monkeypatch.setattr(inputs_race, "choose", lambda kl, last=True: "new" if last else None)
    g = train_sampler(model, traj, tmp / "late", _cfg("auto"), progress=False)
    race = race_record(tmp / "late")
    assert g.inputs == race["chosen"] == "new" and race["step"] == 4 and len(race["history"]) == 2
    plain = train_sampler(model, traj, tmp / "late-plain", _cfg("new"), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), plain.state_dict().values()))


def test_auto_resumes_a_folder_of_an_explicit_run_with_its_inputs(setup):
    model, traj, tmp = setup
    train_sampler(model, traj, tmp / "explicit", _cfg("new"), progress=False, stop_after=2)
    g = train_sampler(model, traj, tmp / "explicit", _cfg("auto"), progress=False)
    ref = train_sampler(model, traj, tmp / "explicit-ref", _cfg("new"), progress=False)
    assert g.inputs == "new" and race_record(tmp / "explicit") is None and "inputs_race" not in g.extra
    assert not (tmp / "explicit" / "race").exists()
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), ref.state_dict().values()))


def test_auto_refuses_an_output_folder_of_another_kind_before_writing_into_it(setup, tmp_path):
    model, traj, _ = setup
    base = model.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="holds a base model"):
        train_sampler(model, traj, base, _cfg("auto"), progress=False)
    assert not (base / "race").exists()


def test_unknown_inputs_are_refused(setup):
    model, traj, tmp = setup
    with pytest.raises(ValueError, match="sampler_inputs must be 'auto' or one of"):
        train_sampler(model, traj, tmp / "bad", _cfg("some"), progress=False)


def test_parallels_readout_is_measured_once_for_the_race_and_the_run(tmp_path, monkeypatch):
    from adjust.train.readiness import ReadinessProbe

    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    model.save_pretrained(tmp_path / "base")  # fingerprinted: the kept readout names its base
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=24, gen_length=5), progress=False)
    traj = load_trajectories(tmp_path / "d")
    parallel = []
    real = ReadinessProbe._measure
    monkeypatch.setattr(ReadinessProbe, "_measure", lambda self, s, K: (s is None and parallel.append(K)) or real(self, s, K))
    train_sampler(model, traj, tmp_path / "auto", _cfg("auto"), progress=False)
    assert sorted(parallel) == [2, 4, 8]  # once per K: not again by the second racer or the run after the race
    recs = [json.loads(x) for x in (tmp_path / "auto" / "train_log.jsonl").read_text().splitlines()]
    assert len({json.dumps(r["readiness"]["K4"]["parallel_kl"]) for r in recs if "readiness" in r}) == 1
