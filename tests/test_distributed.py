"""Scale-out on CPU with gloo: 2-process data generation and training equal the 1-process runs."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from adjust.train.distributed import Rank
from adjust.train.rollouts import rollout_states
from adjust.train.sampler import rollout_kl
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import tiny_mdlm

ROOT = Path(__file__).resolve().parent.parent
MASK = 3


def _run(*args, nproc=1):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    res = subprocess.run([sys.executable, *launch, "-m", "adjust", *map(str, args)], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


def _base(tmp_path):
    model = tiny_mdlm(vocab_size=16, sharpen=3.0, mix=2.0)
    model.config.extra["gen_length"] = 6
    return model.save_pretrained(tmp_path / "base")


def test_two_process_data_generation_equals_one_process(tmp_path):
    base = _base(tmp_path)
    args = ["data", "--base", base, "--num-sequences", 22, "--shard-size", 4, "--seed", 5]  # 6 shards, the last one short
    _run(*args, "--out", tmp_path / "one")
    _run(*args, "--out", tmp_path / "two", nproc=2)
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert one == two  # same shards, rows and hashes: no duplicate, nothing missing
    assert [s["index"] for s in two["shards"]] == list(range(6)) and sum(s["rows"] for s in two["shards"]) == 22
    assert not list((tmp_path / "two").glob("manifest.rank*.json"))
    a, b = load_trajectories(tmp_path / "one"), load_trajectories(tmp_path / "two")
    assert all(torch.equal(x, y) for x, y in zip(a.input_ids + a.rank, b.input_ids + b.rank))


def test_interrupted_two_process_run_resumes_with_one_process(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    s = TrajectorySettings(num_sequences=10, gen_length=4, shard_size=3, seed=1)
    generate_trajectories(model, None, tmp_path / "full", s, progress=False)
    # what a killed 2-process run leaves: rank 1's partial manifest (shards 1 and 3), no manifest.json
    generate_trajectories(model, None, tmp_path / "cut", s, progress=False)
    man = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    (tmp_path / "cut" / "manifest.json").unlink()
    for i in (0, 2):
        (tmp_path / "cut" / f"shard-{i:05d}.safetensors").unlink()
    man["shards"] = [sh for sh in man["shards"] if sh["index"] in (1, 3)]
    (tmp_path / "cut" / "manifest.rank1.json").write_text(json.dumps(man))
    generate_trajectories(model, None, tmp_path / "cut", s, progress=False)
    full = json.loads((tmp_path / "full" / "manifest.json").read_text())
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text()) == full
    assert not list((tmp_path / "cut").glob("manifest.rank*.json"))


def _batch(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, [[1], [1, 9, 10]], tmp_path, TrajectorySettings(num_sequences=7, gen_length=7),
                          progress=False)
    tr = load_trajectories(tmp_path)
    rows, ts = [0, 1, 2, 3, 4, 6, 5], [0, 2, 3, 1, 4, 0, 3]  # 7 rows: the ranks get 4 and 3
    return model, tr, rows, ts


def _grads(model, tr, rows, ts, rank):
    mine = slice(rank.rank, None, rank.world_size)
    xs, attn = rollout_states(tr, rows[mine], ts[mine], 3, MASK, 0)
    torch.manual_seed(7)
    sampler = AdjustSampler.from_base(model)
    with torch.no_grad():  # off the parallel-baseline init, so every weight gets a gradient
        for p in sampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, _ = rollout_kl(sampler, as_adapter(model), xs, attn, rank)
    loss.backward()
    rank.sum_grads_(sampler.parameters())
    return {n: p.grad.clone() for n, p in sampler.named_parameters()}


def _worker(r, port, path, out):
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    rank = Rank.from_env()
    model, tr, rows, ts = _batch(Path(path) / f"rank{r}")
    grads = _grads(model, tr, rows, ts, rank)
    if r == 0:
        torch.save(grads, out)
    rank.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_step_has_the_one_process_gradient(tmp_path):
    model, tr, rows, ts = _batch(tmp_path / "single")
    expect = _grads(model, tr, rows, ts, Rank())
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert set(got) == set(expect)
    for name in expect:
        assert expect[name].abs().max() > 0, name
        torch.testing.assert_close(got[name], expect[name], rtol=1e-4, atol=1e-7, msg=name)


def test_two_process_training_run_equals_one_process(tmp_path):
    base = _base(tmp_path)
    _run("data", "--base", base, "--n", 30, "--out", tmp_path / "traj")
    args = ["train-sampler", "--base", base, "--data", tmp_path / "traj", "--steps", 4, "--batch-size", 6,
            "--eval-every", 2, "--threads", 1, "--cpu-precision", "fp32"]  # bf16 rounds each rank's half its own way
    _run(*args, "--out", tmp_path / "one")
    _run(*args, "--out", tmp_path / "two", nproc=2)
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    log_a = [json.loads(x) for x in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in log_a] == [r.get("step") for r in log_b] == [None, 2, 4]
    for ra, rb in zip(log_a[1:], log_b[1:]):
        assert rb["heldout_kl"] == pytest.approx(ra["heldout_kl"], rel=1e-3)


def test_batch_smaller_than_the_world_is_refused(tmp_path):
    model, tr, _, _ = _batch(tmp_path)
    from adjust.train.sampler import SamplerTrainConfig, train_sampler

    with pytest.raises(ValueError, match="batch_size"):
        train_sampler(model, tr, tmp_path / "s", SamplerTrainConfig(batch_size=1, steps=1), progress=False,
                      rank=Rank(rank=0, world_size=2))
