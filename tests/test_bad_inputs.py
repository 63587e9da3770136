"""Bad inputs outside `generate`'s arguments: checkpoints, data folders, CLI — each gets a clear error."""

import subprocess
import sys
from pathlib import Path

import pytest

import adjust
from adjust.sampler import AdjustSampler
from adjust.train.trajectories import load_trajectories
from conftest import tiny_mdlm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def saved(tmp_path):
    return tiny_mdlm(vocab_size=12).save_pretrained(tmp_path / "m")


def test_truncated_weights_are_reported_with_the_file_name(saved):
    w = saved / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors"):
        adjust.MaskedDiffusionLM.from_pretrained(saved)


def test_damaged_config_is_reported(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        adjust.MaskedDiffusionLM.from_pretrained(saved)


def test_missing_weights_and_unknown_names(saved, tmp_path):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        adjust.MaskedDiffusionLM.from_pretrained(saved)
    with pytest.raises(FileNotFoundError, match="shipped model name"):
        adjust.MaskedDiffusionLM.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="sampler"):
        AdjustSampler.from_pretrained(tmp_path / "nowhere")


def test_a_model_checkpoint_is_not_a_sampler(saved):
    with pytest.raises(ValueError, match="AdjustSampler"):
        AdjustSampler.from_pretrained(saved)


def test_trajectory_folder_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_trajectories(tmp_path)


def test_missing_shard_is_reported(tmp_path):
    from adjust.train.trajectories import TrajectorySettings, generate_trajectories

    generate_trajectories(tiny_mdlm(vocab_size=12), None, tmp_path, TrajectorySettings(2, 3), progress=False)
    (tmp_path / "shard-00000.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00000"):
        load_trajectories(tmp_path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "adjust", *map(str, args)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_cli_errors_are_one_line_messages_not_tracebacks(saved):
    r = _cli("generate", "--model", saved, "--K", "0", "--max-new-tokens", "4")
    assert r.returncode != 0 and "K" in r.stderr and "Traceback" not in r.stderr
    r = _cli("generate", "--model", saved, "--max-new-tokens", "4", "--top-p", "2")
    assert r.returncode != 0 and "top_p" in r.stderr and "Traceback" not in r.stderr
    r = _cli("data", "--base", saved, "--n", "2", "--out", saved / "t")  # no gen_length recorded
    assert r.returncode != 0 and "--gen-length is required" in r.stderr
    r = _cli("train-sampler", "--base", saved, "--data", saved, "--out", saved / "s")
    assert r.returncode != 0 and "manifest.json" in r.stderr and "Traceback" not in r.stderr
