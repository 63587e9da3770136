"""Stop signals, concurrent writers and full or read-only disks, through the real CLI.

- SIGTERM/SIGINT: a checkpoint, then exit status 143/130 and one line "interrupted at
  step N of M; rerun the same command to continue" (never the finished run's "saved").
- two `train-sampler` runs into one folder: the second fails at once with the lock
  message; the first one's result equals a single run's.
- a full disk (simulated ENOSPC at a write, and a real 300 kB tmpfs where the machine
  can mount one): a one-line `error:` naming the file, no temp file left, and a rerun
  with space again finishes to the same result as an uninterrupted run.
- a read-only --out: a one-line error naming the folder.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adjust import fileio
from adjust.cli import main
from adjust.info import describe
from adjust.jobstate import FolderLock, read_job
from conftest import tiny_mdlm

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TRAIN = ["--batch-size", "4", "--eval-every", "5", "--threads", "1"]


def _cmd(*args):
    return [sys.executable, "-m", "adjust", *map(str, args)]


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    model = tiny_mdlm(vocab_size=16, sharpen=3.0, mix=2.0)
    model.config.extra["gen_length"] = 8
    base = model.save_pretrained(root / "base")
    subprocess.run(_cmd("data", "--base", base, "--n", 40, "--out", root / "traj"), env=ENV, check=True,
                   capture_output=True)
    return base, root / "traj"


def _wait(proc, ready, timeout=120):
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"finished too early: {proc.communicate()}"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def test_sigterm_checkpoints_and_exits_143_with_one_line(tmp_path, base_and_data):
    base, traj = base_and_data
    out = tmp_path / "s"
    proc = subprocess.Popen(_cmd("train-sampler", "--base", base, "--data", traj, "--steps", 5000, *TRAIN,
                                 "--out", out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(proc, lambda: (out / "train_state.pt").is_file())
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    step = torch.load(out / "train_state.pt", weights_only=False)["step"]
    line = f"interrupted at step {step} of 5000; rerun the same command to continue"
    assert proc.returncode == 143
    assert _lines(stderr)[-1] == line and sum("interrupted" in x for x in _lines(stderr)) == 1
    assert "saved sampler" not in stdout and "Traceback" not in stderr
    (rec,) = describe(out)
    assert rec["status"] == line and read_job(out)["status"] == "interrupted"


def test_train_base_sigint_exits_130(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"input_ids": [{4 + i % 9}, {5 + i % 7}, 6]}}\n' for i in range(30)))
    out = tmp_path / "b"
    proc = subprocess.Popen(_cmd("train-base", "--data", data, "--vocab-size", 16, "--gen-length", 3, "--hidden", 32,
                                 "--layers", 1, "--heads", 2, "--kv-heads", 1, "--mlp", 64, "--batch-size", 4,
                                 "--eval-every", 3, "--num-examples", 64, "--steps", 5000, "--out", out),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(proc, lambda: (out / "train_state.pt").is_file())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and re.fullmatch(r"interrupted at step \d+ of 5000; rerun the same command to "
                                                   r"continue", _lines(stderr)[-1]) and "saved" not in stdout


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_second_writer_fails_at_once_and_the_first_equals_a_single_run(tmp_path, base_and_data):
    base, traj = base_and_data
    args = ["train-sampler", "--base", base, "--data", traj, "--steps", 10, *TRAIN]
    first = subprocess.Popen(_cmd(*args, "--out", tmp_path / "s"), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait(first, lambda: (FolderLock.holder(tmp_path / "s") or {}).get("pid") == first.pid)
    first.send_signal(signal.SIGSTOP)  # holds the lock while the second one tries
    try:  # the second writer: another process
        t0 = time.time()
        second = subprocess.run(_cmd(*args, "--out", tmp_path / "s"), env=ENV, capture_output=True, text=True,
                                timeout=120)
        waited = time.time() - t0
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    msg = _lines(second.stderr)[-1]
    assert msg.startswith(f"error: {tmp_path / 's'}: in use by another job (pid {first.pid} on "), second.stderr
    assert waited < 60  # it did not wait for the first one (which is stopped): only its start-up
    first.communicate(timeout=300)
    assert first.returncode == 0
    # the single run as its own process too: in this one, earlier tests may have left global torch state
    subprocess.run(_cmd(*args, "--out", tmp_path / "single"), env=ENV, check=True, capture_output=True)
    _same_weights(tmp_path / "s", tmp_path / "single")


def test_two_writers_of_one_file_use_their_own_temp_files(tmp_path):
    """A second write of a file, started while the first is under way, leaves the first one's temp file alone."""
    target, temps = tmp_path / "manifest.json", []

    def first(tmp):
        tmp.write_bytes(b"first")
        fileio.atomic_write(target, lambda t: (temps.append(t), t.write_bytes(b"second")))  # the other writer
        temps.append(tmp)
        assert tmp.read_bytes() == b"first"

    fileio.atomic_write(target, first)
    assert temps[0] != temps[1] and {t.parent for t in temps} == {tmp_path}
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def _cli_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    capsys.readouterr()
    return str(e.value.code)


def test_full_disk_at_the_state_write_is_one_line_and_resumable(tmp_path, base_and_data, monkeypatch, capsys):
    base, traj = base_and_data
    args = ["train-sampler", "--base", base, "--data", traj, "--steps", 10, *TRAIN, "--sampler-inputs", "all"]
    real, writes = fileio.atomic_write_all, []  # one run: the second state write is the run's own

    def disk_full_at_second_state(files):
        if any(p.name == "train_state.pt" for p, _ in files):
            writes.append(1)
            if len(writes) == 2:
                def fill(tmp):
                    tmp.write_bytes(b"\0" * 100)
                    raise OSError(errno.ENOSPC, "No space left on device")
                files = [(p, fill) for p, _ in files]
        return real(files)

    monkeypatch.setattr(fileio, "atomic_write_all", disk_full_at_second_state)
    msg = _cli_error(capsys, *args, "--out", tmp_path / "s")
    assert msg == f"error: cannot write {tmp_path / 's' / 'train_state.pt'}: no space left on the device"
    assert not list((tmp_path / "s").glob(".*.tmp"))
    assert torch.load(tmp_path / "s" / "train_state.pt", weights_only=False)["step"] == 5  # the previous state
    monkeypatch.undo()
    (rec,) = describe(tmp_path / "s")
    assert rec["status"].startswith("interrupted at step 5 of 10")
    main([str(a) for a in (*args, "--out", tmp_path / "s")])
    main([str(a) for a in (*args, "--out", tmp_path / "ref")])
    _same_weights(tmp_path / "s", tmp_path / "ref")


TORCH_FULL = "[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0"  # torch.save on a full disk


@pytest.mark.parametrize("free, reason", [(0, "no space left on the device"), (1 << 30, TORCH_FULL)])
def test_a_full_disk_hidden_by_torch_save_is_recognised(tmp_path, monkeypatch, free, reason):
    """torch.save reports a full disk as a bare RuntimeError ("unexpected pos"): the free space tells.

    With space left, the same error is reported as it is (its first line): not taken for a full disk.
    """
    usage = shutil.disk_usage(tmp_path)._replace(free=free)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: usage)
    (tmp_path / "train_state.pt").write_bytes(b"old")

    def torch_save_on_a_full_disk(tmp):
        tmp.write_bytes(b"\0" * 64)
        raise RuntimeError(f"{TORCH_FULL}\nframe #0: c10::Error::Error")

    with pytest.raises(fileio.WriteError) as e:
        fileio.atomic_write(tmp_path / "train_state.pt", torch_save_on_a_full_disk)
    assert str(e.value) == f"cannot write {tmp_path / 'train_state.pt'}: {reason}"  # one line
    assert (e.value.errno == errno.ENOSPC) == (free == 0)
    assert (tmp_path / "train_state.pt").read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))


def test_full_disk_at_a_shard_write_is_one_line_and_resumable(tmp_path, base_and_data, monkeypatch, capsys):
    base, _ = base_and_data
    args = ["data", "--base", base, "--n", 12, "--shard-size", 3]
    real = fileio.atomic_write_all

    def full_at_shard_2(files):
        if any(p.name == "shard-00002.safetensors" for p, _ in files):
            from safetensors import SafetensorError  # what safetensors raises on a full disk

            def fail(tmp):
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            files = [(p, fail) for p, _ in files]
        return real(files)

    monkeypatch.setattr(fileio, "atomic_write_all", full_at_shard_2)
    msg = _cli_error(capsys, *args, "--out", tmp_path / "t")
    assert msg == f"error: cannot write {tmp_path / 't' / 'shard-00002.safetensors'}: no space left on the device"
    monkeypatch.undo()
    assert read_job(tmp_path / "t")["done"] == 6
    main([str(a) for a in (*args, "--out", tmp_path / "t")])
    main([str(a) for a in (*args, "--out", tmp_path / "ref")])
    assert describe(tmp_path / "t")[0]["fingerprint"] == describe(tmp_path / "ref")[0]["fingerprint"]


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs here (needs unshare and user namespaces)")
def test_real_full_tmpfs(tmp_path, base_and_data):
    base, traj = base_and_data
    disk = tmp_path / "disk"
    disk.mkdir()
    cmd = " ".join(_cmd("train-sampler", "--base", base, "--data", traj, "--steps", 30, *TRAIN, "--out", disk / "s"))
    script = f"""
    mount -t tmpfs -o size=300k tmpfs {disk}
    {cmd} 2>&1 | tail -1
    ls -a {disk}/s | grep -c '\\.tmp$'
    mount -o remount,size=8m {disk}
    {cmd} > /dev/null 2>&1; echo rc=$?
    """
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    lines = r.stdout.strip().splitlines()
    assert re.fullmatch(rf"error: cannot write {disk}/s/\S+: no space left on the device", lines[0]), r.stdout + r.stderr
    assert lines[1] == "0"  # no temp file left behind
    assert lines[2] == "rc=0"  # with space again, the rerun finishes


def test_read_only_out_is_one_line_naming_the_folder(tmp_path, base_and_data, capsys):
    base, _ = base_and_data
    ro = tmp_path / "ro"
    ro.mkdir()
    expect = [f"error: cannot write {ro}/t: Read-only file system", f"error: cannot write {ro}: Read-only file system"]
    if os.geteuid() != 0:  # permissions stop a normal user
        ro.chmod(0o555)
        try:
            got = [_cli_error(capsys, "data", "--base", base, "--n", 4, "--out", out) for out in (ro / "t", ro)]
        finally:
            ro.chmod(0o755)
        assert got == [e.replace("Read-only file system", "Permission denied") for e in expect]
        return
    if not _can_mount():
        pytest.skip("root ignores permissions and no read-only bind mount can be made here")
    data = " ".join(_cmd("data", "--base", base, "--n", 4))
    script = f"""
    mount --bind {ro} {ro} && mount -o remount,ro,bind {ro}
    {data} --out {ro}/t 2>&1 | tail -1
    {data} --out {ro} 2>&1 | tail -1
    """
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.stdout.strip().splitlines() == expect, r.stdout + r.stderr
