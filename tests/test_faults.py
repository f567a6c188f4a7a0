"""Faults and collisions: two processes on one place, damaged resume files, a full disk.
Nothing is lost, doubled or half-written (benchmarks/faults.py repeats these at random
moments, many times)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from debiaskit import locks, runs
from debiaskit.cli import main
from checks import train_until
from debiaskit.train import RunConfig, train

TINY = ["--train-subset", "2000", "--eval-subset", "500", "--threads", "1"]

HOLDER = """
import sys, time
from debiaskit import locks
lock = locks.{how}(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def hold_in_child(folder: Path, how: str = "hold") -> subprocess.Popen:
    """A child process holding ``folder``'s lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(how=how), str(folder)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def test_a_held_lock_refuses_and_a_dead_holders_lock_is_taken_over(tmp_path):
    child = hold_in_child(tmp_path)
    try:
        with pytest.raises(locks.Busy) as exc:
            locks.hold(tmp_path, "the folder")
        assert f"the folder is in use by process {child.pid} on " in str(exc.value)
        assert "\n" not in str(exc.value)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock = locks.hold(tmp_path)  # the kernel released the killed holder's lock
    assert lock.previous["pid"] == child.pid  # and its record says whose it was
    lock.release()
    assert not (tmp_path / locks.LOCK).exists()
    with locks.hold(tmp_path) as again:  # released normally: no previous holder
        assert again.previous is None


def test_wait_free_returns_when_the_holder_ends(tmp_path):
    child = hold_in_child(tmp_path)
    started = time.monotonic()
    killer = subprocess.Popen([sys.executable, "-c",
                               f"import os, time; time.sleep(1); os.kill({child.pid}, 9)"])
    locks.wait_free(tmp_path)
    assert time.monotonic() - started >= 0.5  # it waited for the holder
    killer.wait()
    child.wait()
    locks.wait_free(tmp_path / "no-lock-here")  # nothing to wait for


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_into_a_directory_another_process_trains_refuses(capsys, tmp_path, data_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what the other process wrote so far
    child = hold_in_child(out)
    try:
        before = tree(tmp_path)
        code, stdout, err = run_cli(capsys, "train", "--data-dir", data_dir, "--out", str(out),
                                    "--epochs", "1", *TINY)
        assert code == 2 and stdout == "" and err.count("\n") == 1, err
        assert f"run directory {out} is in use by process {child.pid}" in err
        assert tree(tmp_path) == before
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_discover_into_a_folder_another_process_discovers_into_refuses(capsys, tmp_path):
    out = tmp_path / "found"
    child = hold_in_child(out, "hold_beside")
    try:
        before = tree(tmp_path)
        code, _, err = run_cli(capsys, "discover", "--dataset", "colored_mnist", "--epochs",
                               "1", "--train-subset", "300", "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and "is in use by process" in err, err
        assert tree(tmp_path) == before and not out.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


# --- verified checkpoints ------------------------------------------------------------

def test_a_verified_file_detects_a_changed_byte_that_torch_load_does_not(tmp_path):
    import torch

    obj = {"w": torch.arange(10000, dtype=torch.float32), "epoch": 3}
    path = tmp_path / "c.pt"
    runs.save_verified(path, obj)
    assert torch.equal(runs.load_verified(path)["w"], obj["w"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor's bytes
    path.write_bytes(bytes(data))
    payload = bytes(data).split(b"\n", 2)[2]
    plain = tmp_path / "plain.pt"
    plain.write_bytes(payload)
    torch.load(plain)  # (torch reads the changed tensor without complaint)
    with pytest.raises(runs.Damaged, match="does not match its checksum"):
        runs.load_verified(path)
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(runs.Damaged):
        runs.load_verified(path)
    torch.save(obj, plain)  # a checkpoint written before the header existed still loads
    assert runs.load_verified(plain)["epoch"] == 3


def test_saving_keeps_the_previous_file(tmp_path):
    path, prev = tmp_path / "c.pt", tmp_path / "c.prev.pt"
    runs.save_verified(path, {"epoch": 1}, previous=prev)
    assert not prev.exists()
    runs.save_verified(path, {"epoch": 2}, previous=prev)
    assert runs.load_verified(path)["epoch"] == 2 and runs.load_verified(prev)["epoch"] == 1




def _records(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")}
            for r in runs.read_metrics(out)]


@pytest.fixture(scope="module")
def lff_reference(tmp_path_factory, data_dir):
    """An undisturbed 3-epoch LfF run: (config, run directory)."""
    cfg = RunConfig(method="lff", epochs=3, train_subset=2000, eval_subset=500, threads=1,
                    progress=False, data_dir=data_dir)
    out = tmp_path_factory.mktemp("lff-reference") / "run"
    train(cfg, out)
    return cfg, out


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "changed_byte", "deleted"])
def test_a_damaged_checkpoint_resumes_from_the_one_before(lff_reference, tmp_path,
                                                          monkeypatch, damage):
    cfg, ref = lff_reference
    out = tmp_path / "run"
    train_until(cfg, out, monkeypatch, epochs=2)
    ckpt = out / runs.CHECKPOINT
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "changed_byte":
        ckpt.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:  # killed between setting the old checkpoint aside and renaming the new one in
        ckpt.unlink()
    with open(out / runs.METRICS, "ab") as f:
        f.write(b'{"epoch": 3, "eval": {"te')  # and a line cut by the kill
    (out / ".checkpoint.pt.k2x9q1").write_bytes(data[:1000])  # the killed writer's temporary
    (out / locks.LOCK).write_text('{"pid": 999999, "host": "h", "since": 0}')  # and its lock
    summary = train(cfg, out)
    assert not (out / ".checkpoint.pt.k2x9q1").exists()
    assert "took over the lock of process 999999 on h" in summary["recovered"][0]
    assert _records(out) == _records(ref)  # epoch 2 trained again, to the same numbers
    assert summary["metrics"] == runs.read_json(ref / runs.SUMMARY)["metrics"]
    if damage != "deleted":
        assert "resumed from checkpoint.prev.pt, epoch 1" in summary["recovered"][1]
    assert not ckpt.exists() and not (out / runs.PREVIOUS_CHECKPOINT).exists()


@pytest.mark.slow
def test_no_whole_checkpoint_or_doubled_records_are_refused_in_one_line(
        lff_reference, tmp_path, monkeypatch, capsys):
    cfg, ref = lff_reference
    out = tmp_path / "run"
    train_until(cfg, out, monkeypatch, epochs=2)
    args = ["train", "--method", "lff", "--epochs", "3", "--data-dir", cfg.data_dir,
            "--out", str(out), *TINY]
    for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT):
        path = out / name
        path.write_bytes(path.read_bytes()[:1000])
    before = tree(out)
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1, err
    assert "checkpoint.pt and checkpoint.prev.pt damaged" in err and "delete" in err
    assert tree(out) == before

    out2 = tmp_path / "run2"
    train_until(cfg, out2, monkeypatch, epochs=2)
    lines = (out2 / runs.METRICS).read_bytes().splitlines(keepends=True)
    (out2 / runs.METRICS).write_bytes(b"".join(lines + lines))  # epochs 1, 2, 1, 2
    before = tree(out2)
    code, _, err = run_cli(capsys, *args[:-len(TINY) - 2], "--out", str(out2), *TINY)
    assert code == 2 and err.count("\n") == 1, err
    assert "holds epochs [1, 2, 1, 2] where its checkpoint needs 1..2 once each" in err
    assert tree(out2) == before


# --- a full disk ---------------------------------------------------------------------

def _limited(limit_bytes: int):
    """preexec_fn: files this process writes may not grow past ``limit_bytes`` (writes
    beyond fail with EFBIG, as on a full disk; Python ignores SIGXFSZ)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_a_full_disk_during_a_cache_write_is_one_line_and_leaves_no_entry(tmp_path):
    code = ("import numpy as np; from debiaskit.data.cache import DerivedCache; "
            f"DerivedCache({str(tmp_path)!r}).get('k', {{'a': 1}}, "
            "lambda: {'x': np.zeros((512, 512))})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=_limited(200_000))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "DebiaskitError: disk full while writing" in last and "free some space" in last
    left = [p.name for p in (tmp_path / "k").iterdir()]
    assert len(left) == 1 and left[0].endswith(".lock"), left  # no archive, no temporary


def test_a_metrics_line_that_does_not_fit_is_cut_back(tmp_path):
    (tmp_path / runs.METRICS).write_bytes(b'{"epoch": 1}\n' * 100)  # 1,300 bytes
    code = ("from debiaskit import runs; "
            f"runs.append_metrics({str(tmp_path)!r}, {{'epoch': 101, 'eval': 'x' * 500}})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=_limited(1_500))  # room for part of the line only
    assert "disk full while writing" in proc.stderr.strip().splitlines()[-1]
    assert (tmp_path / runs.METRICS).read_bytes() == b'{"epoch": 1}\n' * 100


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous(
        lff_reference, tmp_path, monkeypatch):
    cfg, ref = lff_reference
    out = tmp_path / "run"
    train_until(cfg, out, monkeypatch, epochs=1)
    ckpt = (out / runs.CHECKPOINT).read_bytes()
    metrics = (out / runs.METRICS).read_bytes()
    command = [sys.executable, "-m", "debiaskit", "train", "--method", "lff", "--epochs", "3",
               "--data-dir", cfg.data_dir, "--out", str(out), *TINY]
    # room for the metrics line, not for a second checkpoint of the same size
    proc = subprocess.run(command, capture_output=True, text=True,
                          preexec_fn=_limited(len(ckpt) - 1000))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "disk full while writing" in proc.stderr
    assert (out / runs.CHECKPOINT).read_bytes() == ckpt  # the previous checkpoint intact
    # epoch 2's record was appended before its checkpoint failed; a resume drops it
    assert runs.read_metrics(out)[0] == json.loads(metrics)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "config.json", "metrics.jsonl"]  # no temporary file left
    proc = subprocess.run(command, capture_output=True, text=True)  # space again: resume
    assert proc.returncode == 0, proc.stderr
    assert _records(out) == _records(ref)


# --- benches sharing a folder, a Ray worker killed -----------------------------------

def _bench_metrics(folder: Path) -> dict:
    return {str(p.parent.relative_to(folder)): runs.read_json(p)["metrics"]
            for p in sorted(folder.rglob(runs.SUMMARY))}


@pytest.mark.slow
def test_two_benches_on_one_folder_train_every_run_once(tmp_path, data_dir):
    command = [sys.executable, "-m", "debiaskit", "bench", "quick", "--epochs", "2",
               "--seeds", "2", "--workers", "1", "--data-dir", data_dir,
               "--out", str(tmp_path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    logs = [out for out, _ in outputs]
    trained = [x for log in logs for x in log.splitlines()
               if x.startswith("[") and x.endswith(" s)")]  # trained by the bench logging it
    assert len(trained) == 4, logs  # every run once, by one of the two
    for metrics in (tmp_path / "quick").rglob(runs.METRICS):  # no epoch written twice
        assert [r["epoch"] for r in runs.read_metrics(metrics.parent)] == [1, 2]
    assert not list(tmp_path.rglob(locks.LOCK))


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_leaves_the_bench_numbers_unchanged(tmp_path, data_dir):
    ray = pytest.importorskip("ray", reason="the Ray backend is tested where ray is installed "
                                            "(pip install -e '.[test,ray]')")
    import threading

    from debiaskit.bench import run_bench

    run_bench("quick", tmp_path / "reference", epochs=3, data_dir=data_dir, workers=1,
              log=lambda _: None)
    out, killed = tmp_path / "ray", []

    def kill_one_worker():  # the first run's worker, once it has saved a checkpoint
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            for ckpt in out.rglob(runs.CHECKPOINT):
                try:
                    holder = json.loads((ckpt.parent / locks.LOCK).read_text() or "{}")
                except (OSError, ValueError):
                    continue
                if holder.get("pid"):
                    os.kill(holder["pid"], signal.SIGKILL)
                    killed.append((ckpt.parent, holder["pid"]))
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    try:
        run_bench("quick", out, epochs=3, data_dir=data_dir, log=lambda _: None,
                  ray_address="local")
    finally:
        ray.shutdown()
    watcher.join(timeout=5)
    assert killed, "no worker was killed"
    assert _bench_metrics(out / "quick") == _bench_metrics(tmp_path / "reference" / "quick")
