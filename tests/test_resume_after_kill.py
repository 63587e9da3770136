"""SIGKILL `adjust data` and `adjust train-sampler` mid-run, resume, compare with uninterrupted runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import tiny_mdlm

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "adjust", *map(str, args)]
    if wait:
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        return None
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc, ready, timeout=120):
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "finished before it could be killed: make the job longer"
        assert time.time() - t0 < timeout
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _base(tmp_path):
    model = tiny_mdlm(vocab_size=16, sharpen=3.0, mix=2.0)
    model.config.extra["gen_length"] = 10
    return model.save_pretrained(tmp_path / "base")


def _shards(path):
    man = json.loads((path / "manifest.json").read_text())
    return man["shards"]


def test_data_generation_killed_and_resumed_equals_uninterrupted(tmp_path):
    base = _base(tmp_path)
    args = ["data", "--base", base, "--n", 60, "--shard-size", 4, "--seed", 3]
    _cli(*args, "--out", tmp_path / "full")
    proc = _cli(*args, "--out", tmp_path / "cut", wait=False)
    _kill_when(proc, lambda: (tmp_path / "cut" / "manifest.json").is_file() and len(_shards(tmp_path / "cut")) >= 2)
    done = len(_shards(tmp_path / "cut"))
    assert done < 15, "the kill came too late to test anything"
    _cli(*args, "--out", tmp_path / "cut")
    full, cut = _shards(tmp_path / "full"), _shards(tmp_path / "cut")
    assert [s["sha256"] for s in full] == [s["sha256"] for s in cut]
    assert sum(s["rows"] for s in cut) == 60
    for s in full:
        a = load_file(str(tmp_path / "full" / s["file"]))
        b = load_file(str(tmp_path / "cut" / s["file"]))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_sampler_training_killed_and_resumed_equals_uninterrupted(tmp_path):
    base = _base(tmp_path)
    _cli("data", "--base", base, "--n", 40, "--out", tmp_path / "traj")
    args = ["train-sampler", "--base", base, "--data", tmp_path / "traj", "--steps", 40, "--batch-size", 4,
            "--eval-every", 5, "--threads", 1]
    _cli(*args, "--out", tmp_path / "full")
    proc = _cli(*args, "--out", tmp_path / "cut", wait=False)
    _kill_when(proc, lambda: (tmp_path / "cut" / "train_state.pt").is_file())
    assert torch.load(tmp_path / "cut" / "train_state.pt", weights_only=False)["step"] < 40
    _cli(*args, "--out", tmp_path / "cut")
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
