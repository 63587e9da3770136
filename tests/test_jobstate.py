"""Long jobs never mix two bases or two datasets, and a folder knows whether its job finished.

The silent cases of issue 17, each now refused (or reported) with nothing written over:
train-base resumed on other data, train-sampler resumed with another base, data resumed
with another base, train-sampler on data of another base, a finished folder rerun with
other inputs; plus "already complete", extending a finished run, and the folder lock.
"""

import errno
import json
import os
import signal
import socket
import sys

import pytest
import torch

import adjust
from adjust import jobstate
from adjust.cli import main
from adjust.data.jsonl import JsonlDataset
from adjust.jobstate import FolderInUse, FolderLock, Job, JobInterrupted, read_job
from adjust.train import trajectories
from adjust.train.base import BaseTrainConfig, train_base
from adjust.train.sampler import SamplerTrainConfig, train_sampler
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import tiny_mdlm

SAMPLER = ["--batch-size", "4", "--eval-every", "2", "--threads", "1"]
BASE_SHAPE = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
              "intermediate_size": 64}
BASE_FLAGS = ["--vocab-size", "16", "--gen-length", "6", "--hidden", "32", "--layers", "1", "--heads", "2",
              "--kv-heads", "1", "--mlp", "64", "--batch-size", "32", "--eval-every", "3", "--num-examples", "64"]


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `adjust ARGS` in this process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder) -> dict:
    """Every file of `folder` (but the lock) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != jobstate.LOCK_NAME}


@pytest.fixture
def bases(tmp_path):
    """Two saved bases of the same shape and vocabulary, other weights; and one with another vocabulary."""
    paths = []
    for name, kw in (("a", {"seed": 0}), ("b", {"seed": 1}), ("v14", {"vocab_size": 14})):
        model = tiny_mdlm(**{"vocab_size": 12, "sharpen": 3.0, **kw})
        model.config.extra["gen_length"] = 5
        paths.append(model.save_pretrained(tmp_path / name))
    return paths


def _jsonl(path, seed):
    g = torch.Generator().manual_seed(seed)
    rows = [{"input_ids": torch.randint(4, 16, (6,), generator=g).tolist()} for _ in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_base_resumed_on_other_data_is_refused(tmp_path, capsys):
    a, b = _jsonl(tmp_path / "a.jsonl", 0), _jsonl(tmp_path / "b.jsonl", 1)
    cfg = BaseTrainConfig(steps=6, batch_size=32, eval_every=3, num_examples=64)
    train_base(JsonlDataset(a, vocab_size=16, gen_length=6), tmp_path / "x", BASE_SHAPE, cfg, progress=False,
               stop_after=2)
    before = snapshot(tmp_path / "x")
    assert read_job(tmp_path / "x")["status"] == "interrupted" and read_job(tmp_path / "x")["done"] == 2  # stop_after
    with pytest.raises(ValueError, match="was trained on other data"):
        train_base(JsonlDataset(b, vocab_size=16, gen_length=6), tmp_path / "x", BASE_SHAPE, cfg, progress=False)
    code, _, err = cli(capsys, "train-base", "--data", b, *BASE_FLAGS, "--steps", 6, "--out", tmp_path / "x")
    assert code == 1 and "was trained on other data" in err
    assert snapshot(tmp_path / "x") == before
    # the finished folder: rerun as it was is "already complete"; other data still refused
    code, out, _ = cli(capsys, "train-base", "--data", a, *BASE_FLAGS, "--steps", 6, "--out", tmp_path / "y")
    assert code == 0 and "saved" in out
    done = snapshot(tmp_path / "y")
    code, out, _ = cli(capsys, "train-base", "--data", a, *BASE_FLAGS, "--steps", 6, "--out", tmp_path / "y")
    assert code == 0 and "already complete (step 6 of 6)" in out and snapshot(tmp_path / "y") == done
    code, _, err = cli(capsys, "train-base", "--data", b, *BASE_FLAGS, "--steps", 6, "--out", tmp_path / "y")
    assert code == 1 and "other data" in err and snapshot(tmp_path / "y") == done
    # extending the finished run: it continues from step 6 to 9 (not a fresh start), and the rerun is complete
    code, out, _ = cli(capsys, "train-base", "--data", a, *BASE_FLAGS, "--steps", 9, "--out", tmp_path / "y")
    assert code == 0 and "saved" in out
    assert torch.load(tmp_path / "y" / "train_state.pt", weights_only=False)["step"] == 9
    job = read_job(tmp_path / "y")
    assert job["status"] == "complete" and [e["event"] for e in job["history"]] == ["start", "extend"]
    log = [json.loads(line) for line in (tmp_path / "y" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r] == [3, 6, 9]


def test_data_resumed_with_another_base_is_refused(tmp_path, bases, capsys, monkeypatch):
    a, b, _ = bases

    class StopAfterTwoShards:  # SIGTERM arriving during the second shard
        def __init__(self):
            self.reads, self.signum = 0, signal.SIGTERM

        @property
        def requested(self):
            self.reads += 1
            return self.reads >= 2

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(trajectories, "GracefulStop", StopAfterTwoShards)
    settings = TrajectorySettings(num_sequences=8, gen_length=5, shard_size=2)
    with pytest.raises(JobInterrupted, match="interrupted at sequence 4 of 8") as stop:
        generate_trajectories(adjust.MaskedDiffusionLM.from_pretrained(a), None, tmp_path / "t", settings,
                              progress=False)
    assert stop.value.exit_code == 143
    monkeypatch.undo()
    before = snapshot(tmp_path / "t")
    with pytest.raises(ValueError, match=r"incomplete \(4 of 8 sequences\)"):  # not yet usable as --data
        load_trajectories(tmp_path / "t")
    code, _, err = cli(capsys, "data", "--base", b, "--n", 8, "--shard-size", 2, "--out", tmp_path / "t")
    assert code == 1 and "made for base 'mdlm' with weights" in err and "--allow-base-mismatch" in err
    assert snapshot(tmp_path / "t") == before
    code, out, _ = cli(capsys, "info", tmp_path / "t")
    assert "interrupted at sequence 4 of 8" in out
    code, _, err = cli(capsys, "data", "--base", a, "--n", 6, "--shard-size", 2, "--out", tmp_path / "t")
    assert code == 1 and "interrupted at sequence 4 of 8; rerun with --n 8" in err
    assert cli(capsys, "data", "--base", a, "--n", 8, "--shard-size", 2, "--out", tmp_path / "t")[0] == 0
    assert "complete (sequence 8 of 8)" in cli(capsys, "info", tmp_path / "t")[1]


def test_finished_data_folder_reruns_extends_and_refuses(tmp_path, bases, capsys):
    a, b, _ = bases
    args = ["data", "--base", a, "--shard-size", 3, "--seed", 2]
    assert cli(capsys, *args, "--n", 7, "--out", tmp_path / "t")[0] == 0
    done = snapshot(tmp_path / "t")
    code, out, _ = cli(capsys, *args, "--n", 7, "--out", tmp_path / "t")
    assert code == 0 and "already complete (sequence 7 of 7)" in out and snapshot(tmp_path / "t") == done
    for other in (["--temperature", "0.5"], ["--prompts", _prompts(tmp_path)]):
        code, _, err = cli(capsys, *args, "--n", 7, *other, "--out", tmp_path / "t")
        assert code == 1 and ("other settings" in err or "other prompts" in err), err
    code, _, err = cli(capsys, "data", "--base", b, "--shard-size", 3, "--seed", 2, "--n", 7, "--out", tmp_path / "t")
    assert code == 1 and "with weights" in err
    code, _, err = cli(capsys, *args, "--n", 5, "--out", tmp_path / "t")
    assert code == 1 and "--n 5 is fewer" in err
    assert snapshot(tmp_path / "t") == done
    # extending 7 -> 11 remakes the partly filled shard: the set equals a fresh run of 11
    assert cli(capsys, *args, "--n", 11, "--out", tmp_path / "t")[0] == 0
    assert cli(capsys, *args, "--n", 11, "--out", tmp_path / "fresh")[0] == 0
    ext, fresh = load_trajectories(tmp_path / "t"), load_trajectories(tmp_path / "fresh")
    assert ext.fingerprint == fresh.fingerprint and len(ext) == 11
    assert [e["event"] for e in read_job(tmp_path / "t")["history"]] == ["start", "extend"]


def _prompts(tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"prompt_ids": [5, 6]}\n')
    return f


@pytest.fixture
def traj(tmp_path, bases, capsys):
    a, b, v14 = bases
    for name, base in (("ta", a), ("tb", b), ("t14", v14)):
        assert cli(capsys, "data", "--base", base, "--n", 24, "--out", tmp_path / name)[0] == 0
    return tmp_path / "ta", tmp_path / "tb", tmp_path / "t14"


def test_train_sampler_on_data_of_another_base_is_refused(tmp_path, bases, traj, capsys):
    a, b, v14 = bases
    ta, tb, t14 = traj
    code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", tb, "--steps", 2, *SAMPLER, "--out", tmp_path / "s")
    assert code == 1 and "data: made for base 'mdlm' with weights" in err
    assert not (tmp_path / "s").exists()
    code, _, err = cli(capsys, "train-sampler", "--base", v14, "--data", ta, "--steps", 2, *SAMPLER,
                       "--allow-base-mismatch", "--out", tmp_path / "s")
    assert code == 1 and "vocab_size 12 vs base 14" in err and "Traceback" not in err  # was an IndexError
    code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", t14, "--steps", 2, *SAMPLER, "--out", tmp_path / "s")
    assert code == 1 and "vocab_size 14 vs base 12" in err
    code, out, _ = cli(capsys, "train-sampler", "--base", a, "--data", tb, "--steps", 2, *SAMPLER,
                       "--allow-base-mismatch", "--out", tmp_path / "s")
    assert code == 0 and "saved sampler" in out


def test_train_sampler_resumed_with_another_base_or_data_is_refused(tmp_path, bases, traj, capsys):
    a, b, _ = bases
    ta, tb, _ = traj
    cfg = SamplerTrainConfig(steps=6, batch_size=4, eval_every=2, sampler_inputs="all")  # one run, no inputs race
    train_sampler(adjust.MaskedDiffusionLM.from_pretrained(a), load_trajectories(ta), tmp_path / "s", cfg,
                  progress=False, stop_after=2)
    before = snapshot(tmp_path / "s")
    args = ["--steps", 6, "--batch-size", 4, "--eval-every", 2, "--sampler-inputs", "all", "--out", tmp_path / "s"]
    code, _, err = cli(capsys, "train-sampler", "--base", b, "--data", tb, *args)
    assert code == 1 and f"{tmp_path / 's'}: made for base" in err and "with weights" in err
    code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", tb, *args)  # base a, data of b
    assert code == 1 and "data: made for base" in err
    code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", ta, *args[:-2], "--lr", 0.01, *args[-2:])
    assert code == 1 and "other training settings (lr: 0.003 recorded, 0.01 given)" in err
    # other trajectories of the same base: the resume compares the data fingerprint
    assert cli(capsys, "data", "--base", a, "--n", 24, "--seed", 1, "--out", tmp_path / "ta2")[0] == 0
    code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", tmp_path / "ta2", *args)
    assert code == 1 and f"{tmp_path / 's'}: was trained on other data" in err
    assert snapshot(tmp_path / "s") == before
    code, out, _ = cli(capsys, "info", tmp_path / "s")
    assert "interrupted at step 2 of 6" in out


def test_finished_sampler_folder_reruns_extends_and_refuses(tmp_path, bases, traj, capsys):
    a, b, _ = bases
    ta, tb, _ = traj
    args = ["train-sampler", "--base", a, "--data", ta, *SAMPLER, "--sampler-inputs", "all", "--out", tmp_path / "s"]
    assert cli(capsys, *args, "--steps", 4)[0] == 0  # one run (no inputs race): its job history is exact
    done = snapshot(tmp_path / "s")
    code, out, _ = cli(capsys, *args, "--steps", 4)
    assert code == 0 and "already complete (step 4 of 4)" in out and "held-out KL None" not in out
    assert snapshot(tmp_path / "s") == done
    code, _, err = cli(capsys, "train-sampler", "--base", b, "--data", tb, *SAMPLER, "--out", tmp_path / "s",
                       "--steps", 4)
    assert code == 1 and "made for base" in err and snapshot(tmp_path / "s") == done
    assert cli(capsys, "data", "--base", a, "--n", 24, "--seed", 1, "--out", tmp_path / "ta2")[0] == 0
    code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", tmp_path / "ta2", *SAMPLER, "--out",
                       tmp_path / "s", "--steps", 4)  # the same base, other trajectories
    assert code == 1 and "was trained on other data" in err and snapshot(tmp_path / "s") == done
    code, _, err = cli(capsys, *args, "--steps", 3)
    assert code == 1 and "--steps 3 is fewer" in err
    code, out, _ = cli(capsys, *args, "--steps", 8)  # extending a finished run is supported
    assert code == 0 and "saved sampler" in out
    state = torch.load(tmp_path / "s" / "train_state.pt", weights_only=False)
    assert state["step"] == 8 and read_job(tmp_path / "s")["status"] == "complete"
    assert [e["event"] for e in read_job(tmp_path / "s")["history"]] == ["start", "extend"]
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "step" in r] == [2, 4, 6, 8]


def test_out_folder_of_another_kind_or_a_file_is_refused(tmp_path, bases, traj, capsys):
    a, _, _ = bases
    ta, _, _ = traj
    (tmp_path / "file").write_text("x")
    for out, what in ((a, "holds a base model"), (ta, "holds trajectories"), (tmp_path / "file", "is a file")):
        code, _, err = cli(capsys, "train-sampler", "--base", a, "--data", ta, "--steps", 2, *SAMPLER, "--out", out)
        assert code == 1 and what in err and str(out) in err, err
    code, _, err = cli(capsys, "data", "--base", a, "--n", 4, "--out", a)
    assert code == 1 and "holds a base model (adjust train-base), not the output of adjust data" in err
    sampler = adjust.AdjustSampler.from_base(adjust.MaskedDiffusionLM.from_pretrained(a)).save_pretrained(
        tmp_path / "sampler")
    before = snapshot(sampler)
    code, _, err = cli(capsys, "data", "--base", a, "--n", 4, "--out", sampler)
    assert code == 1 and f"output folder {sampler} holds an ADJUST sampler (adjust train-sampler)" in err
    code, _, err = cli(capsys, "train-base", "--data", _jsonl(tmp_path / "d.jsonl", 0), *BASE_FLAGS, "--steps", 3,
                       "--out", sampler)
    assert code == 1 and "holds an ADJUST sampler (adjust train-sampler), not the output of adjust train-base" in err
    assert snapshot(sampler) == before


def test_a_second_writer_is_refused_and_a_dead_holder_is_not(tmp_path):
    folder = tmp_path / "f"
    job = Job.begin(folder, "data", {"x": 1}, 3, unit="sequence")
    other = FolderLock(folder)
    other_key = os.path.realpath(folder)
    holder = FolderLock._held.pop(other_key)  # as if another process held it
    try:
        with pytest.raises(FolderInUse, match=rf"in use by another job \(pid {os.getpid()} on "):
            other.acquire()
    finally:
        FolderLock._held[other_key] = holder
    assert FolderLock.holder(folder)["pid"] == os.getpid()
    job.checkpoint(3)
    job.end()
    assert FolderLock.holder(folder) is None and read_job(folder)["status"] == "complete"
    # a killed writer leaves its pid in the file but no lock: the next one proceeds
    (folder / "job.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    Job.begin(folder, "data", {"x": 1}, 3, unit="sequence").end()


def test_without_flock_the_recorded_pid_and_host_decide(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")  # some network filesystems

    monkeypatch.setattr(jobstate.fcntl, "flock", no_flock)
    lock_file = tmp_path / "job.lock"
    lock_file.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "t"}))
    with pytest.raises(FolderInUse, match=f"pid {os.getppid()}"):  # alive on this host
        FolderLock(tmp_path).acquire()
    lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "t"}))
    with pytest.raises(FolderInUse, match="on elsewhere"):  # another host: cannot tell, so refuse
        FolderLock(tmp_path).acquire()
    lock_file.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))  # dead: stale
    lock = FolderLock(tmp_path)
    lock.acquire()
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()


def test_checkpoint_state_is_left_for_a_rerun_in_the_same_process(tmp_path, bases, traj):
    """A job that failed mid-run in this process (lock still open) does not block the next one here."""
    a, _, _ = bases
    model, tr = adjust.MaskedDiffusionLM.from_pretrained(a), load_trajectories(traj[0])
    Job.begin(tmp_path / "s", "train-sampler", {}, 4)  # never ended, as after an exception
    s = train_sampler(model, tr, tmp_path / "s", SamplerTrainConfig(steps=2, batch_size=4, eval_every=2),
                      progress=False)
    assert read_job(tmp_path / "s")["status"] == "complete" and s.data_fingerprint == tr.fingerprint
    assert adjust.AdjustSampler.from_pretrained(tmp_path / "s").data_fingerprint == tr.fingerprint


def test_info_tells_a_running_job_from_a_killed_one(tmp_path):
    """A job.json left at "running" by a killed process reads as interrupted once nobody holds the lock."""
    job = Job.begin(tmp_path / "j", "train-sampler", {"x": 1}, 4)
    job.checkpoint(2)
    running = f"running: at step 2 of 4 (pid {os.getpid()} on {socket.gethostname()})"
    assert jobstate.status_line(tmp_path / "j") == running
    job.lock.release()  # as the kernel does for a SIGKILLed process: the record still says "running"
    assert read_job(tmp_path / "j")["status"] == "running"
    line = "interrupted at step 2 of 4 (its process was killed or failed); rerun the same command to continue"
    assert jobstate.status_line(tmp_path / "j") == line
