"""`adjust info`: checkpoints, shipped names and trajectory folders described from metadata."""

import json

import pytest

from adjust.cli import main
from adjust.info import describe
from adjust.sampler import AdjustSampler
from adjust.train.trajectories import TrajectorySettings, generate_trajectories
from conftest import tiny_mdlm


def test_shipped_name_gives_the_model_and_its_sampler():
    recs = describe("synthetic")
    assert [r["kind"] for r in recs] == ["MaskedDiffusionLM", "AdjustSampler"]
    model, sampler = recs
    assert model["config"]["vocab_size"] == sampler["for_base"]["vocab_size"]
    assert model["made_by"].startswith("adjust train-base") and sampler["made_by"].startswith("adjust train-sampler")
    assert 0 < model["parameters"] and model["bytes"] > 4 * model["parameters"] * 0.99  # fp32 weights


def test_saved_checkpoints_report_parameters_and_base(tmp_path):
    model = tiny_mdlm(vocab_size=12)
    model.save_pretrained(tmp_path / "m")
    AdjustSampler.from_base(model).save_pretrained(tmp_path / "s")
    (rec,) = describe(tmp_path / "m")
    assert rec["parameters"] == model.num_parameters()
    (rec,) = describe(tmp_path / "s")
    assert rec["for_base"]["hidden_size"] == 32 and rec["kind"] == "AdjustSampler"


def test_trajectory_folder_and_partial_run(tmp_path, capsys):
    model = tiny_mdlm(vocab_size=12)
    s = TrajectorySettings(num_sequences=5, gen_length=3, shard_size=2)
    generate_trajectories(model, None, tmp_path, s, progress=False)
    (rec,) = describe(tmp_path)
    assert rec["kind"] == "trajectories" and rec["sequences"] == 5 and rec["shards"] == 3 and rec["complete"]
    man = json.loads((tmp_path / "manifest.json").read_text())
    man["shards"] = man["shards"][:1]
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    main(["info", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["sequences"] == 2 and out["complete"] is False


def test_unknown_paths_are_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a checkpoint"):
        describe(tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        describe("no-such-model")
    with pytest.raises(SystemExit, match="no-such-model"):
        main(["info", "no-such-model"])
