"""Bad inputs outside `generate`'s arguments: checkpoints, data folders, CLI — each gets a clear error."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


# issue 17: the remaining inputs, each refused with an error naming the argument (or key, file and line)

@pytest.mark.parametrize("key, value, err, words", [
    ("mask_token_id", 12, ValueError, r"mask_token_id 12 is outside the vocabulary \[0, 12\)"),
    ("pad_token_id", -1, ValueError, "pad_token_id -1 is outside the vocabulary"),
    ("bos_token_id", -3, ValueError, "bos_token_id -3"),
    ("hidden_size", "128", TypeError, "hidden_size must be an int, got str '128'"),
    ("num_layers", 0, ValueError, "num_layers must be > 0"),
    ("rms_norm_eps", "1e-6", TypeError, "rms_norm_eps must be a number"),
    ("qkv_bias", 1, TypeError, "qkv_bias must be a bool"),
    ("num_kv_heads", 3, ValueError, r"num_heads \(2\) must be a multiple of num_kv_heads \(3\)"),
    ("surprise", 1, TypeError, "unexpected keyword argument 'surprise'"),
])
def test_config_values_out_of_range_or_of_the_wrong_type(saved, key, value, err, words):
    cfg = json.loads((saved / "config.json").read_text())
    cfg[key] = value
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(err, match=rf"{saved / 'config.json'}: .*{words}"):
        adjust.MaskedDiffusionLM.from_pretrained(saved)


@pytest.mark.parametrize("section, key, value, words", [
    ("layer_config", "head_dim", "16", "head_dim must be an int"),
    ("base", "vocab_size", "12", "vocab_size must be an int, got str '12'"),
    ("base", "fingerprint", 7, "fingerprint must be a string or null, got int 7"),
])
def test_sampler_config_of_the_wrong_type(saved, tmp_path, section, key, value, words):
    AdjustSampler.from_base(adjust.MaskedDiffusionLM.from_pretrained(saved)).save_pretrained(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    cfg[section][key] = value
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"config.json: not a valid sampler config .*{words}"):
        AdjustSampler.from_pretrained(tmp_path / "s")


def test_garbage_tokenizer_file_is_named(tmp_path):
    from adjust.data.tokenizer import word_tokenizer

    tiny_mdlm(vocab_size=6).save_pretrained(tmp_path / "m", tokenizer=word_tokenizer(["a", "b"]))
    (tmp_path / "m" / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    with pytest.raises(ValueError, match=r"m/tokenizer\.json: not a valid tokenizer file"):
        adjust.MaskedDiffusionLM.from_pretrained(tmp_path / "m").load_tokenizer()


@pytest.mark.parametrize("kw, words", [
    (dict(device="gpu"), "device: 'gpu' is not a torch device"),
    (dict(device="cuda:7"), "device: 'cuda:7'"),
    (dict(dtype="fp17"), "dtype: 'fp17' is not a floating dtype"),
    (dict(dtype=torch.int64), "dtype: torch.int64 is not a floating torch dtype"),
])
def test_bad_device_and_dtype_strings(saved, tmp_path, kw, words):
    with pytest.raises(ValueError, match=words):
        adjust.MaskedDiffusionLM.from_pretrained(saved, **kw)
    AdjustSampler.from_base(tiny_mdlm(vocab_size=12)).save_pretrained(tmp_path / "s")
    with pytest.raises(ValueError, match=words):
        AdjustSampler.from_pretrained(tmp_path / "s", **kw)


def test_good_dtype_strings_are_accepted(saved):
    assert adjust.MaskedDiffusionLM.from_pretrained(saved, dtype="bf16").lm_head.weight.dtype == torch.bfloat16


def test_non_utf8_jsonl_names_file_and_line(tmp_path, saved):
    from adjust.data.jsonl import JsonlDataError, JsonlDataset

    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(JsonlDataError, match=rf"{f}:2: not valid UTF-8 \(byte 0xe9 at column 14\)"):
        JsonlDataset(f)
    model = adjust.MaskedDiffusionLM.from_pretrained(saved)
    model.config.extra["gen_length"] = 3
    model.save_pretrained(saved)
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b'{"prompt_ids": [5]}\n{"prompt": "caf\xe9"}\n')
    r = _cli("data", "--base", saved, "--n", "2", "--prompts", prompts, "--out", saved.parent / "t")
    assert r.returncode == 1 and f"error: {prompts}:2: not valid UTF-8" in r.stderr


def _eval_error(capsys, *args) -> str:
    """The error `adjust ARGS` exits with: its SystemExit message (exit status 1) or argparse's (status 2)."""
    from adjust.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code not in (0, None)
    return f"{e.value.code} {capsys.readouterr().err}"


@pytest.mark.parametrize("args, words", [
    (["eval", "--base", "tasks", "--n", "0"], "argument --n: must be ≥ 1, got 0"),
    (["eval", "--base", "tasks", "--seeds", "0"], "argument --seeds: must be ≥ 1"),
    (["eval", "--base", "tasks", "--methods", "joint,adjust"], "--methods adjust needs a --sampler"),
    (["eval", "--base", "tasks", "--K", "a,b"], "--K: expected comma-separated ints, got 'a,b'"),
    (["eval", "--base", "tasks", "--temperature", "hot"], "--temperature: expected comma-separated floats"),
    (["eval", "--base", "tasks", "--K", "0,2"], "--K: every value must be ≥ 1, got 0"),  # was silently dropped
    (["eval", "--base", "tasks", "--K", "-2", "--frontier"], "--K: every value must be ≥ 1, got -2"),
    (["eval", "--base", "tasks", "--temperature", "-1"], "--temperature: every value must be ≥ 0, got -1.0"),
    (["eval", "--base", "tasks", "--K", "1", "--methods", "parallel"], "nothing to evaluate: parallel at K in [1]"),
    (["generate", "--model", "tasks", "--n", "0"], "argument --n: must be ≥ 1, got 0"),
    (["generate", "--model", "tasks", "--seed", str(2**64)], "argument --seed: must be in [0, 2**63)"),
    (["data", "--base", "tasks", "--n", "4", "--out", "x", "--seed", "-1"], "argument --seed: must be in"),
])
def test_cli_arguments_out_of_range(capsys, args, words):
    assert words in _eval_error(capsys, *args)


@pytest.mark.parametrize("Ks, words", [((0, 2), "Ks: every K must be an int ≥ 1, got 0"), ((2.5,), "got 2.5"),
                                       ((1,), "nothing to evaluate: parallel at K in")])
def test_evaluate_refuses_ks_it_would_skip(Ks, words):
    """K < 1 (and parallel at K = 1 only) used to be skipped without a word: an empty table."""
    from adjust.data import get_testbed
    from adjust.eval import EvalConfig, evaluate

    with pytest.raises(ValueError, match=words):
        evaluate(tiny_mdlm(vocab_size=12), None, get_testbed("tasks"), EvalConfig(methods=("parallel",), Ks=Ks))


@pytest.mark.parametrize("content, words", [
    ('{"testbed": "tasks"}', "not adjust eval records"),
    ('[1, 2]', "not adjust eval records"),
    ('[{"method": "joint"}]', "not adjust eval records (expected a JSON list of objects with testbed, method"),
    ('{"oops"', "not a JSON file"),
])
def test_report_on_a_file_that_is_not_eval_records(tmp_path, capsys, content, words):
    f = tmp_path / "r.json"
    f.write_text(content)
    msg = _eval_error(capsys, "report", f)
    assert msg.startswith(f"error: {f}: ") and words in msg
