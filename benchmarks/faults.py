"""Fault injection: kills, collisions, a full disk and damaged files, against undisturbed runs.

Kills training runs and benches at random moments, collides processes on one run
directory, fills the disk and damages checkpoints; every run must end as an undisturbed
one does (issue 34, point 6).

Every case drives the command line as a black box (``python -m debiaskit ...``
subprocesses, each in a session of its own) and compares end states with an undisturbed
reference run of the same command:

  * training: an LfF run on Colored MNIST (``--epochs 12 --train-subset 10000
    --eval-subset 1000 --threads 1 --precision fp32 --compile off``) is started
    ``--trials`` times in a fresh folder and killed (SIGKILL or SIGTERM, alternating by
    trial, random for further kills) 1 to ``--max-kills`` times, each at a random moment (a
    delay drawn from the seeded RNG over 0.9 of the expected remaining run time, from the
    reference's timeline; in every fifth trial the first kill comes instead right after a
    random epoch's record appears, between the record and its checkpoint), then rerun
    until it exits 0. Compared with the reference: metrics.jsonl's records (their
    ``seconds`` fields aside), summary.json's metrics, last-epoch metrics and selected
    epoch, the weights of model.pt and sample_weights.pt, all bit for bit; and metrics.jsonl
    holds epochs 1..E once each, every line whole JSON. Files the reference run does not
    have (e.g. a temporary file a kill left) are listed, not counted as a failure;
  * bench: ``debiaskit bench quick --epochs 3 --seeds 2 --workers 2 --precision fp32``
    (4 runs), killed 1 to ``--max-kills`` - 1 times in each of ``--bench-trials`` trials
    the same way (the bench process only: its workers must exit by themselves), rerun
    until it exits 0, in odd trials once the killed bench's workers have exited (the
    seconds they took are recorded), in even ones at once, while they may still write;
    every run compared as above and results.json with the reference's (its
    ``peak_rss_mib`` aside);
  * collisions: two identical ``train`` commands on one folder started 1 s apart, and a
    second one started while the first trains (after its first record, stopped with
    SIGSTOP until the second has ended, so that it is alive whatever the second's start-up
    time): one trains, the other exits 2 with one line ``debiaskit: error: ... in use
    ...``; a run killed with SIGKILL is taken over by the
    next command (a lock left by a dead process); two benches started 0.2 s apart on one
    folder (both exit 0, each run trained by one of them: the other's log line for it says
    "finished by another process");
  * a full disk: the run directory on a small tmpfs (as root; else a file-size limit,
    ``RLIMIT_FSIZE``, on a resumed run) so the first checkpoint fits and a later one does
    not: exit 2, one line naming the disk, the last good checkpoint loadable, and the same
    command resumes to the reference once there is space; the dataset cache
    (``DEBIASKIT_CACHE``) on a full disk while BAR's resized images are written: exit 2,
    one line, no entry or partial file left;
  * damaged files after a kill: checkpoint.pt cut to half, checkpoint.pt with 4 KiB of
    random bytes in its middle, checkpoint.pt and checkpoint.prev.pt both cut (where the
    trainer keeps one), a torn last line appended to metrics.jsonl. A damaged checkpoint
    must be repaired (the run ends identical) or refused in one line, exit 2; after a
    refusal, the advice of the message (remove the file) is followed and the run must end
    identical.

Each case's outcome is recorded as passed / failed with its details; nothing stops the
harness but an interrupt. Writes JSON (``--out``) with a ``machine`` record, the commands,
every trial and case, and a summary. ``--quick``: 3 training trials of 6 epochs, 2 bench
trials of a one-seed bench, all cases (a smoke run of the harness). Scratch folders go to
a temporary folder (``--scratch``), removed unless ``--keep``.

    python benchmarks/faults.py [--trials 30] [--bench-trials 10] [--max-kills 3]
        [--seed 0] [--only train,bench,collisions,disk,damage] [--disk-full auto]
        [--quick] [--keep] [--scratch DIR] [--data-dir DIR] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from debiaskit import runs
from debiaskit.errors import DebiaskitError
from debiaskit.train import machine

GROUPS = ("train", "bench", "collisions", "disk", "damage")
#: metrics.jsonl fields that hold times (they differ between any two runs)
VOLATILE = ("seconds", "train_seconds", "peak_rss_mib")
#: summary.json fields compared with the reference
SUMMARY_FIELDS = ("metrics", "last_epoch_metrics", "selected_epoch", "epochs_trained")
#: weights compared tensor by tensor with the reference
WEIGHT_FILES = ("model.pt", "sample_weights.pt")
ANOTHER = "finished by another process"
#: kill delays are drawn over this share of the expected remaining run time (the rest of
#: the time the run may be finishing, or done: a kill there does not land)
KILL_WINDOW = 0.9
#: seconds a command may take while another one on its run directory is stopped
STOPPED_WAIT = 180.0
LOG_LINE = re.compile(r"^\[(\d+)/(\d+)\] (.+?) (\S+) seed (\d+): (.*)$")


# ------------------------------------------------------------------ processes


@dataclass
class Result:
    """How one command ended."""
    code: int | None          # exit status; -N: killed by signal N
    seconds: float
    stdout: str
    stderr: str
    signal_sent: str | None = None   # the harness's signal, None if it ended by itself
    timed_out: bool = False

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def brief(self) -> dict:
        lines = self.error_lines()
        return {"exit": self.code, "seconds": round(self.seconds, 2),
                "signal_sent": self.signal_sent, "timed_out": self.timed_out,
                "stderr_lines": len(lines), "stderr_last": lines[-1][:400] if lines else None}


class Proc:
    """A ``debiaskit`` command in its own session (process group), output to files."""

    counter = 0

    def __init__(self, ctx: Context, argv: list[str], env: dict | None = None,
                 preexec=None) -> None:
        Proc.counter += 1
        stem = ctx.logs / f"{Proc.counter:04d}-{argv[0]}"
        self.out_path, self.err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        self.out_file, self.err_file = open(self.out_path, "wb"), open(self.err_path, "wb")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([sys.executable, "-m", "debiaskit", *argv],
                                  stdout=self.out_file, stderr=self.err_file,
                                  env={**ctx.env, **(env or {})}, start_new_session=True,
                                  preexec_fn=preexec)
        ctx.started.append(self.p.pid)
        self.signal_sent: str | None = None

    @property
    def pid(self) -> int:
        return self.p.pid

    def running(self) -> bool:
        return self.p.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def kill(self, sig: int) -> bool:
        """Send ``sig`` to the command's own process (not its group); False if it had ended."""
        if self.p.poll() is not None:
            return False
        self.p.send_signal(sig)
        self.signal_sent = signal.Signals(sig).name
        return True

    def wait(self, timeout: float) -> Result:
        timed_out = False
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.p.kill()
            self.p.wait()
        seconds = self.elapsed()
        self.out_file.close()
        self.err_file.close()
        return Result(self.p.returncode, seconds,
                      self.out_path.read_text(errors="replace"),
                      self.err_path.read_text(errors="replace"), self.signal_sent, timed_out)


def live_processes() -> dict[int, int]:
    """{pid: process group} of every live (not zombie) process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state not in ("Z", "X"):
            out[int(entry)] = int(pgrp)
    return out


def live_groups() -> set[int]:
    return set(live_processes().values())


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    return [pid for pid, group in live_processes().items() if group == pgid]


def wait_group(pgid: int, limit: float) -> dict:
    """Wait up to ``limit`` s for the processes of group ``pgid`` (e.g. a killed bench's
    workers) to exit; kill what is left. Returns how long it took and what was left."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if not group_alive(pgid):
            return {"exited_after_seconds": round(time.monotonic() - t0, 2), "left": 0}
        time.sleep(0.1)
    left = group_alive(pgid)
    if left:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"exited_after_seconds": None, "left": len(left),
            "note": f"{len(left)} process(es) of the group still alive after {limit} s; "
                    "killed by the harness"}


def run_cmd(ctx: Context, argv: list[str], env=None, preexec=None) -> Result:
    proc = Proc(ctx, argv, env, preexec)
    res = proc.wait(ctx.timeout)
    wait_group(proc.pid, 10)
    return res


def one_line_error(res: Result, words=()) -> tuple[bool, str]:
    """Exit 2, one line on stderr starting 'debiaskit: error:' (and holding each of
    ``words``, any of the alternatives in a tuple)?"""
    lines = res.error_lines()
    problems = []
    if res.code != 2:
        problems.append(f"exit {res.code}, not 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, not 1")
    if not lines or not lines[-1].startswith("debiaskit: error:"):
        problems.append("no 'debiaskit: error:' line" if not lines else
                        "the last stderr line does not start with 'debiaskit: error:'")
    text = " ".join(lines).lower()
    for w in words:
        alternatives = w if isinstance(w, tuple) else (w,)
        if not any(a in text for a in alternatives):
            problems.append(f"the message does not say {' / '.join(alternatives)!r}")
    return not problems, "; ".join(problems)


# ------------------------------------------------------------------ run state


def strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items()
                if k not in VOLATILE and not k.endswith("seconds")}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def read_records(run: Path) -> dict:
    """metrics.jsonl: the records, how many lines are torn (not whole JSON, or the last one
    without its newline, which the next append would join) and the epochs in file order."""
    path = run / runs.METRICS
    if not path.exists():
        return {"records": [], "whole": True, "epochs": [], "torn_lines": 0}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records, torn = [], 0
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            torn += 1
    if tail:  # a last line without its newline: torn, whether or not it parses
        torn += 1
    return {"records": records, "whole": torn == 0, "torn_lines": torn,
            "epochs": [r.get("epoch") for r in records]}


def records_written(run: Path) -> int:
    """Lines in ``run``'s metrics.jsonl so far (0 when there is none)."""
    try:
        return (run / runs.METRICS).read_bytes().count(b"\n")
    except OSError:
        return 0


def checkpoint_epoch(path: Path):
    """The epoch a checkpoint holds, 'unreadable', or None when there is none."""
    if not path.exists():
        return None
    try:  # (its sha256 checked: a changed byte counts as unreadable)
        return runs.load_verified(path).get("epoch")
    except DebiaskitError:  # a torn, changed or foreign file
        return "unreadable"


def inspect(run: Path) -> dict:
    """A run folder after a kill: its records and checkpoints, and the point of a run its
    files show (a resumed process killed before its first new record leaves them as it
    found them)."""
    recs = read_records(run)
    ckpt = checkpoint_epoch(run / runs.CHECKPOINT)
    prev = checkpoint_epoch(run / "checkpoint.prev.pt")
    last = recs["epochs"][-1] if recs["epochs"] else 0
    if (run / runs.SUMMARY).exists():
        phase = "finished"
    elif not (run / runs.CONFIG).exists():
        phase = "before config.json"
    elif (run / runs.MODEL).exists():
        phase = "finishing (model.pt written, no summary)"
    elif ckpt == "unreadable":
        phase = f"checkpoint.pt unreadable, {last} record(s)"
    elif ckpt is None and not last:
        phase = "before the first checkpoint"
    elif isinstance(ckpt, int) and last > ckpt:
        phase = f"between epoch {last}'s record and its checkpoint"
    else:
        phase = f"training after epoch {last}"
    return {"records": len(recs["records"]), "last_epoch": last, "checkpoint_epoch": ckpt,
            "prev_checkpoint_epoch": prev, "records_whole": recs["whole"], "phase": phase,
            "files": sorted(p.name for p in run.iterdir()) if run.is_dir() else []}


def same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def compare_run(run: Path, ref: Path, epochs: int) -> dict:
    """A finished run against the reference run: identical records, summary and weights?
    Records whole, epochs 1..E once each? Files the reference does not have?"""
    problems = []
    recs, ref_recs = read_records(run), read_records(ref)
    records_ok = recs["whole"] and recs["epochs"] == list(range(1, epochs + 1))
    if not recs["whole"]:
        problems.append(f"metrics.jsonl has {recs['torn_lines']} torn line(s)")
    if recs["epochs"] != list(range(1, epochs + 1)):
        problems.append(f"metrics.jsonl epochs {recs['epochs']}, not 1..{epochs} once each")
    same_records = strip_volatile(recs["records"]) == strip_volatile(ref_recs["records"])
    if not same_records:
        problems.append("metrics.jsonl records differ from the reference's")
    try:
        summary = json.loads((run / runs.SUMMARY).read_text())
        ref_summary = json.loads((ref / runs.SUMMARY).read_text())
        diff = [k for k in SUMMARY_FIELDS if summary.get(k) != ref_summary.get(k)]
    except (OSError, ValueError) as err:
        diff = [f"summary.json unreadable ({err})"]
    if diff:
        problems.append(f"summary.json differs in {', '.join(diff)}")
    weights_ok = True
    for name in WEIGHT_FILES:
        if (ref / name).exists() != (run / name).exists():
            weights_ok = False
            problems.append(f"{name} present in one of the run and the reference only")
        elif (ref / name).exists():
            try:
                same = same_tensors(torch.load(run / name, map_location="cpu",
                                               weights_only=False),
                                    torch.load(ref / name, map_location="cpu",
                                               weights_only=False))
            except Exception as err:
                same = False
                problems.append(f"{name} unreadable ({type(err).__name__})")
            if not same:
                weights_ok = False
                problems.append(f"{name} differs from the reference's")
    files = {p.name for p in run.iterdir()}
    ref_files = {p.name for p in ref.iterdir()}
    return {"identical": same_records and not diff, "weights_identical": weights_ok,
            "records_ok": records_ok, "duplicated_epochs": len(recs["epochs"])
            - len(set(recs["epochs"])), "torn_lines": recs["torn_lines"],
            "extra_files": sorted(files - ref_files),
            "missing_files": sorted(ref_files - files), "problems": problems}


def bench_runs(folder: Path) -> list[Path]:
    """The run folders of a bench folder (OUT/PRESET/METHOD/ROW/seedN), relative."""
    return sorted(p.relative_to(folder) for p in folder.glob("*/*/seed*") if p.is_dir())


def compare_bench(out: Path, ref: Path, preset: str, epochs: int) -> dict:
    """Every run of a finished bench folder and its results.json against the reference."""
    problems, per_run = [], {}
    ref_runs = bench_runs(ref / preset)
    got = bench_runs(out / preset)
    if got != ref_runs:
        problems.append(f"run folders {[str(p) for p in got]} are not the reference's")
    for rel in ref_runs:
        if not (out / preset / rel / runs.SUMMARY).exists():
            problems.append(f"{rel}: not finished")
            per_run[str(rel)] = {"identical": False, "records_ok": False,
                                 "problems": ["not finished"]}
            continue
        c = compare_run(out / preset / rel, ref / preset / rel, epochs)
        per_run[str(rel)] = c
        problems.extend(f"{rel}: {p}" for p in c["problems"])
    try:
        table = strip_volatile(json.loads((out / preset / "results.json").read_text()))
        same_table = table == strip_volatile(json.loads((ref / preset / "results.json")
                                                        .read_text()))
    except (OSError, ValueError) as err:
        same_table = False
        problems.append(f"results.json unreadable ({err})")
    if not same_table:
        problems.append("results.json differs from the reference's")
    return {"identical": same_table and all(r["identical"] for r in per_run.values()),
            "weights_identical": all(r.get("weights_identical", False)
                                     for r in per_run.values()),
            "records_ok": all(r["records_ok"] for r in per_run.values()),
            "results_json_identical": same_table,
            "duplicated_epochs": sum(r.get("duplicated_epochs", 0) for r in per_run.values()),
            "torn_lines": sum(r.get("torn_lines", 0) for r in per_run.values()),
            "extra_files": {k: r["extra_files"] for k, r in per_run.items()
                            if r.get("extra_files")},
            "problems": problems}


# ------------------------------------------------------------------ the harness


@dataclass
class Context:
    args: argparse.Namespace
    scratch: Path
    env: dict
    rng: random.Random
    logs: Path = field(init=False)
    started: list = field(default_factory=list)
    mounts: list = field(default_factory=list)
    timeout: float = 600.0
    ref_train: Path | None = None
    ref_bench: Path | None = None
    train_timeline: dict = field(default_factory=dict)
    bench_seconds: float = 0.0
    checkpoint_bytes: int | None = None

    def __post_init__(self) -> None:
        self.logs = self.scratch / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def train_argv(self, out: Path) -> list[str]:
        a = self.args
        return ["train", "--method", "lff", "--dataset", "colored_mnist", "--aligned-ratio",
                "0.99", "--epochs", str(a.epochs), "--train-subset", str(a.train_subset),
                "--eval-subset", str(a.eval_subset), "--threads", "1", "--precision", "fp32",
                "--compile", "off", *self.data_dir_args(), "--out", str(out)]

    def bench_argv(self, out: Path) -> list[str]:
        a = self.args
        return ["bench", a.bench_preset, "--epochs", str(a.bench_epochs), "--seeds",
                str(a.bench_seeds), "--workers", "2", "--precision", "fp32",
                *self.data_dir_args(), "--out", str(out)]

    def data_dir_args(self) -> list[str]:
        return ["--data-dir", self.args.data_dir] if self.args.data_dir else []

    def expected_train_seconds(self, epochs_done: int) -> float:
        """The reference's run time less the epochs already done (for a resumed run)."""
        t = self.train_timeline
        return max(t["total"] - epochs_done * t["epoch"], t["startup"])

    def mount_tmpfs(self, where: Path, kib: int) -> None:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                       check=True, capture_output=True)
        self.mounts.append(where)

    def resize_tmpfs(self, where: Path, kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(where)], check=True,
                       capture_output=True)

    def unmount(self, where: Path) -> None:
        if where in self.mounts:
            done = subprocess.run(["umount", str(where)], check=False, capture_output=True)
            if done.returncode:
                subprocess.run(["umount", "-l", str(where)], check=False,
                               capture_output=True)
            self.mounts.remove(where)


def say(text: str) -> None:
    print(text, flush=True)


def reference_train(ctx: Context) -> dict:
    """The undisturbed run, with the time each epoch's record appeared."""
    out = ctx.scratch / "reference-train"
    proc = Proc(ctx, ctx.train_argv(out))
    seen, times = 0, []
    while proc.running() and proc.elapsed() < ctx.timeout:
        n = records_written(out)
        while seen < n:
            seen += 1
            times.append(proc.elapsed())
        time.sleep(0.01)
    res = proc.wait(ctx.timeout)
    if res.code != 0:
        raise RuntimeError(f"the reference training run failed: {res.brief()}")
    epochs = ctx.args.epochs
    epoch = (times[-1] - times[0]) / max(epochs - 1, 1) if len(times) == epochs else 0.5
    ctx.ref_train = out
    ctx.train_timeline = {"total": res.seconds, "epoch": epoch,
                          "startup": (times[0] - epoch) if times else res.seconds / 2,
                          "record_seconds": [round(t, 3) for t in times]}
    files = sorted(p.name for p in out.iterdir())
    say(f"reference training run: {res.seconds:.1f} s, first record at "
        f"{times[0] if times else float('nan'):.1f} s, {epoch:.2f} s per epoch; files {files}")
    return {"seconds": round(res.seconds, 2), "timeline": ctx.train_timeline, "files": files}


def reference_bench(ctx: Context) -> dict:
    out = ctx.scratch / "reference-bench"
    res = run_cmd(ctx, ctx.bench_argv(out))
    if res.code != 0:
        raise RuntimeError(f"the reference bench failed: {res.brief()}")
    ctx.ref_bench, ctx.bench_seconds = out, res.seconds
    n = len(bench_runs(out / ctx.args.bench_preset))
    say(f"reference bench: {res.seconds:.1f} s, {n} runs")
    return {"seconds": round(res.seconds, 2), "runs": n}


def finish_runs(ctx: Context, argv: list[str], attempts: int) -> list[Result]:
    """Rerun ``argv`` until it exits 0 (at most ``attempts`` times)."""
    done = []
    for _ in range(attempts):
        done.append(run_cmd(ctx, argv))
        if done[-1].code == 0:
            break
    return done


def kill_train_once(ctx: Context, run: Path, sig: int, moment: str, rng: random.Random) -> dict:
    """Start the training command on ``run`` and kill it once; what happened."""
    before = inspect(run) if run.exists() else {"last_epoch": 0}
    done_epochs = before["last_epoch"] if isinstance(before["last_epoch"], int) else 0
    epochs = ctx.args.epochs
    if moment == "after_record" and done_epochs >= epochs - 1:
        moment = "random"
    proc = Proc(ctx, ctx.train_argv(run))
    info: dict = {"signal": signal.Signals(sig).name, "moment": moment,
                  "epochs_before": done_epochs}
    if moment == "random":
        delay = rng.uniform(0.0, KILL_WINDOW * ctx.expected_train_seconds(done_epochs))
        info["delay_seconds"] = round(delay, 3)
        try:
            proc.p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
    else:  # right after epoch `target`'s record appears, before its checkpoint is written
        target = rng.randint(done_epochs + 1, epochs - 1)
        info["after_record_of_epoch"] = target
        while proc.running() and proc.elapsed() < ctx.timeout:
            if records_written(run) >= target:
                break
            time.sleep(0.001)
        info["delay_seconds"] = round(proc.elapsed(), 3)
    landed = proc.kill(sig)
    res = proc.wait(ctx.timeout)
    wait_group(proc.pid, 10)
    info["landed"] = landed
    info["exit"] = res.code
    if not landed:
        info["note"] = "the run had ended before the kill"
        info["stderr_last"] = res.brief()["stderr_last"]
    state = inspect(run) if run.exists() else {"phase": "no run folder yet", "last_epoch": 0}
    info["state"] = state
    info["new_records"] = (state["last_epoch"] - done_epochs
                           if isinstance(state.get("last_epoch"), int) else None)
    if (run / runs.CHECKPOINT).exists():
        ctx.checkpoint_bytes = (run / runs.CHECKPOINT).stat().st_size
    return info


def train_trial(ctx: Context, i: int) -> dict:
    rng = ctx.rng
    run = ctx.scratch / "train" / f"trial{i:02d}"
    run.parent.mkdir(parents=True, exist_ok=True)
    n_kills = rng.randint(1, ctx.args.max_kills)
    kills = []
    for k in range(n_kills):
        sig = ((signal.SIGKILL, signal.SIGTERM)[i % 2] if k == 0
               else rng.choice((signal.SIGKILL, signal.SIGTERM)))
        moment = "after_record" if (k == 0 and i % 5 == 2) else "random"
        kills.append(kill_train_once(ctx, run, sig, moment, rng))
        if not kills[-1]["landed"] or runs.is_finished(run):
            break  # it ended by itself, or was killed after its summary: no more kills
    # a run killed after its summary.json is finished: the command would refuse to rerun it
    finished_early = kills[-1]["exit"] == 0 or runs.is_finished(run)
    reruns = [] if finished_early else finish_runs(ctx, ctx.train_argv(run), ctx.args.attempts)
    ended = finished_early or (reruns and reruns[-1].code == 0)
    result = {"trial": i, "kills": kills, "kills_landed": sum(k["landed"] for k in kills),
              "reruns": [r.brief() for r in reruns], "resumes": len(reruns),
              "exit_0": bool(ended)}
    if ended:
        result.update(compare_run(run, ctx.ref_train, ctx.args.epochs))
    else:
        result.update({"identical": False, "weights_identical": False, "records_ok": False,
                       "problems": ["did not end with exit 0"]})
    result["passed"] = bool(ended and result["identical"] and result["weights_identical"]
                            and result["records_ok"])
    moments = ", ".join(f"{k['signal']} at {k['delay_seconds']:.2f} s ({k['new_records']} "
                        f"new record(s); {k['state'].get('phase', '?')})" if k["landed"] else
                        f"{k['signal']} too late (ended, exit {k['exit']})" for k in kills)
    extra = f"; files the reference lacks: {result['extra_files']}" \
        if result.get("extra_files") else ""
    say(f"train trial {i}: {moments}; {len(reruns)} rerun(s); "
        f"{'PASS' if result['passed'] else 'FAIL: ' + '; '.join(result['problems'])}{extra}")
    return result


def bench_trial(ctx: Context, i: int) -> dict:
    rng = ctx.rng
    out = ctx.scratch / "bench" / f"trial{i:02d}"
    preset = ctx.args.bench_preset
    n_kills = rng.randint(1, max(1, ctx.args.max_kills - 1))
    # odd trials restart once the killed bench's workers have exited; even ones at once,
    # while they may still be writing (as a user who reruns the command straight away)
    immediate = i % 2 == 0
    kills, orphans = [], []
    for k in range(n_kills):
        sig = ((signal.SIGKILL, signal.SIGTERM)[i % 2] if k == 0
               else rng.choice((signal.SIGKILL, signal.SIGTERM)))
        total = len(bench_runs(ctx.ref_bench / preset))
        finished = sum((out / preset / r / runs.SUMMARY).exists()
                       for r in bench_runs(ctx.ref_bench / preset))
        delay = rng.uniform(0.0, KILL_WINDOW * ctx.bench_seconds
                            * max(total - finished, 1) / total)
        proc = Proc(ctx, ctx.bench_argv(out))
        try:
            proc.p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        landed = proc.kill(sig)
        res = proc.wait(ctx.timeout)
        if immediate:
            orphans.append(proc.pid)
            workers = None
        else:
            workers = wait_group(proc.pid, 30)
        states = {str(r): inspect(out / preset / r)["phase"]
                  for r in bench_runs(out / preset)} if (out / preset).exists() else {}
        kills.append({"signal": signal.Signals(sig).name, "delay_seconds": round(delay, 3),
                      "landed": landed, "exit": res.code, "workers_after_kill": workers,
                      "runs_finished_before": finished, "runs": states})
        if not landed:
            break
    finished_early = kills[-1]["exit"] == 0
    reruns = [] if finished_early else finish_runs(ctx, ctx.bench_argv(out), ctx.args.attempts)
    ended = finished_early or (reruns and reruns[-1].code == 0)
    restart_lines = [line for r in reruns for line in r.stdout.splitlines()
                     if "already finished" in line]
    # (an immediate restart's killed workers: still alive after the reruns?)
    after_reruns = [wait_group(pgid, 30) for pgid in orphans]
    result = {"trial": i, "restart": "immediate" if immediate else "after the workers exit",
              "kills": kills, "kills_landed": sum(k["landed"] for k in kills),
              "reruns": [r.brief() for r in reruns], "resumes": len(reruns),
              "restart_lines": restart_lines, "exit_0": bool(ended),
              "killed_workers_after_reruns": after_reruns}
    if ended:
        result.update(compare_bench(out, ctx.ref_bench, preset, ctx.args.bench_epochs))
    else:
        result.update({"identical": False, "weights_identical": False, "records_ok": False,
                       "problems": ["did not end with exit 0"]})
    lingering = [w for w in [k["workers_after_kill"] for k in kills] + after_reruns
                 if w and w["left"]]
    if lingering:
        result["problems"].append("workers outlived the killed bench by more than 30 s")
    result["passed"] = bool(ended and result["identical"] and result["weights_identical"]
                            and result["records_ok"] and not lingering)
    moments = ", ".join(
        (f"{k['signal']} at {k['delay_seconds']:.1f} s (workers gone after "
         f"{k['workers_after_kill']['exited_after_seconds']} s)" if k["workers_after_kill"]
         else f"{k['signal']} at {k['delay_seconds']:.1f} s, restarted at once")
        if k["landed"] else f"{k['signal']} too late" for k in kills)
    extra = f"; files the reference lacks: {result['extra_files']}" \
        if result.get("extra_files") else ""
    say(f"bench trial {i}: {moments}; {restart_lines[:1]}; "
        f"{'PASS' if result['passed'] else 'FAIL: ' + '; '.join(result['problems'][:4])}"
        f"{extra}")
    return result


# ------------------------------------------------------------------ collisions


def wait_for_records(run: Path, n: int, proc: Proc, limit: float = 600.0) -> bool:
    """Wait until ``proc`` has written ``n`` lines to ``run``'s metrics.jsonl; False if it
    ended (or ``limit`` s passed) first."""
    while proc.running() and proc.elapsed() < limit:
        if records_written(run) >= n:
            return True
        time.sleep(0.01)
    return False


def two_trains(ctx: Context, name: str, gap: str) -> dict:
    """Two identical ``train`` commands on one folder: the second 1 s after the first
    (``gap`` "1s"), or (``gap`` "stopped") once the first has written its first record and
    been stopped (SIGSTOP: still alive, and holding whatever it holds, however long the
    second takes to start; it continues, SIGCONT, once the second has ended). One trains,
    the other is refused."""
    run = ctx.scratch / "collisions" / name
    run.parent.mkdir(parents=True, exist_ok=True)
    first = Proc(ctx, ctx.train_argv(run))
    if gap == "1s":
        time.sleep(1.0)
    else:
        wait_for_records(run, 1, first, ctx.timeout)
        first.p.send_signal(signal.SIGSTOP)
    second_started = first.elapsed()
    second = Proc(ctx, ctx.train_argv(run))
    # (a second command that waited for the stopped one would wait for ever)
    r2 = second.wait(ctx.timeout if gap == "1s" else STOPPED_WAIT)
    second_ended = first.elapsed()
    if gap != "1s":
        first.p.send_signal(signal.SIGCONT)
    r1 = first.wait(ctx.timeout)
    results = {"first": r1.brief(), "second": r2.brief(),
               "second_started_at": round(second_started, 2),
               "second_ended_at": round(second_ended, 2),
               "first_ended_at": round(r1.seconds, 2)}
    codes = sorted([r1.code, r2.code])
    problems = []
    if codes != [0, 2]:
        problems.append(f"exit statuses {r1.code} and {r2.code}, not one 0 and one 2")
    refused = r2 if r2.code == 2 else r1 if r1.code == 2 else None
    if refused is not None:
        ok, why = one_line_error(refused, ["in use"])
        if not ok:
            problems.append(f"the refused command: {why}")
    if runs.is_finished(run):
        c = compare_run(run, ctx.ref_train, ctx.args.epochs)
        results["end_state"] = c
        if not (c["identical"] and c["records_ok"] and c["weights_identical"]):
            problems.extend(f"end state: {p}" for p in c["problems"])
    else:
        problems.append("the run did not finish")
    return {"passed": not problems, "problems": problems, "details": results,
            "expected": "one command trains (exit 0), the other exits 2 with one line "
                        "'debiaskit: error: ... in use ...'; the run ends as the reference"}


def killed_lock(ctx: Context) -> dict:
    """SIGKILL a run after its second record; the next command takes it over."""
    run = ctx.scratch / "collisions" / "killed-lock"
    kill_at_record(ctx, run, 2)
    state = inspect(run)
    if (run / runs.CHECKPOINT).exists():
        ctx.checkpoint_bytes = (run / runs.CHECKPOINT).stat().st_size
    res = run_cmd(ctx, ctx.train_argv(run))
    problems, details = [], {"after_kill": state, "rerun": res.brief()}
    if res.code != 0:
        problems.append(f"the rerun exited {res.code}")
    else:
        c = compare_run(run, ctx.ref_train, ctx.args.epochs)
        details["end_state"] = c
        if not (c["identical"] and c["records_ok"] and c["weights_identical"]):
            problems.extend(c["problems"])
    return {"passed": not problems, "problems": problems, "details": details,
            "expected": "the rerun takes over the dead process's run (exit 0) and ends as "
                        "the reference"}


def parse_bench_log(text: str) -> dict:
    """Which runs a bench's log says it trained, and which another process finished."""
    trained, other, failed = [], [], []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        key = f"{m.group(3)}/{m.group(4)}/seed{m.group(5)}"
        if ANOTHER in line:
            other.append(key)
        elif "FAILED" in m.group(6):
            failed.append(key)
        else:
            trained.append(key)
    head = next((line for line in text.splitlines() if "already finished" in line), None)
    return {"trained": trained, "by_another": other, "failed": failed, "first_line": head}


def two_benches(ctx: Context) -> dict:
    out = ctx.scratch / "collisions" / "two-benches"
    preset = ctx.args.bench_preset
    a = Proc(ctx, ctx.bench_argv(out))
    time.sleep(0.2)
    b = Proc(ctx, ctx.bench_argv(out))
    ra, rb = a.wait(ctx.timeout), b.wait(ctx.timeout)
    for p in (a, b):
        wait_group(p.pid, 30)
    logs = {"first": parse_bench_log(ra.stdout), "second": parse_bench_log(rb.stdout)}
    planned = [f"{r.parts[0]}/{r.parts[1]}/{r.parts[2]}"
               for r in bench_runs(ctx.ref_bench / preset)]
    problems = []
    for name, r in (("first", ra), ("second", rb)):
        if r.code != 0:
            problems.append(f"the {name} bench exited {r.code}: {r.brief()['stderr_last']}")
    trained = logs["first"]["trained"] + logs["second"]["trained"]
    twice = sorted({k for k in trained if trained.count(k) > 1})
    never = sorted(set(planned) - set(trained))
    if twice:
        problems.append(f"trained by both benches: {twice}")
    if never:
        problems.append(f"trained by neither bench's log: {never}")
    details = {"first": ra.brief(), "second": rb.brief(), "logs": logs,
               "runs_trained_in_both_logs": len(trained), "planned_runs": len(planned)}
    if (out / preset).exists():
        c = compare_bench(out, ctx.ref_bench, preset, ctx.args.bench_epochs)
        details["end_state"] = c
        if not (c["identical"] and c["records_ok"] and c["weights_identical"]):
            problems.extend(c["problems"])
    else:
        problems.append("no bench folder")
    return {"passed": not problems, "problems": problems, "details": details,
            "expected": "both benches exit 0; every run trained by one of them (the other's "
                        f"log says '{ANOTHER}'); the runs and table equal the reference"}


# ------------------------------------------------------------------ disk full


def measure_checkpoint(ctx: Context) -> int:
    if ctx.checkpoint_bytes is None:
        run = ctx.scratch / "disk" / "probe"
        kill_at_record(ctx, run, 2)
        ctx.checkpoint_bytes = (run / runs.CHECKPOINT).stat().st_size
    return ctx.checkpoint_bytes


def limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def disk_mode(ctx: Context) -> str:
    mode = ctx.args.disk_full
    if mode == "auto":
        mode = "tmpfs" if os.geteuid() == 0 and shutil.which("mount") else "rlimit"
    return mode


def disk_full_checkpoint(ctx: Context) -> dict:
    """A checkpoint write on a full disk: exit 2 in one line, the last good checkpoint
    loadable, and the same command resumes to the reference once there is space."""
    mode = disk_mode(ctx)
    size = measure_checkpoint(ctx)
    details: dict = {"method": mode, "checkpoint_bytes": size}
    problems = []
    if mode == "tmpfs":
        mnt = ctx.scratch / "disk" / "tmpfs-checkpoint"
        # one checkpoint and its records fit; a second one (written beside the first, then
        # renamed over it) does not
        kib = int(1.5 * size) // 1024 + 64
        details["tmpfs_kib"] = kib
        ctx.mount_tmpfs(mnt, kib)
        try:
            run = mnt / "run"
            res = run_cmd(ctx, ctx.train_argv(run))
            words = [("disk", "space")]
            problems += check_disk_failure(res, run, words, details)
            ctx.resize_tmpfs(mnt, 512 * 1024)
            problems += resume_to_reference(ctx, run, details)
        finally:
            ctx.unmount(mnt)
    else:
        # a per-file size limit cannot let one checkpoint through and stop the next (they
        # are the same size): the run is killed after two checkpoints, and resumed under a
        # limit below the checkpoint's size
        run = ctx.scratch / "disk" / "rlimit-checkpoint"
        kill_at_record(ctx, run, 2)
        details["limit_bytes"] = size // 2
        res = run_cmd(ctx, ctx.train_argv(run), preexec=limit_file_size(size // 2))
        problems += check_disk_failure(res, run, [], details)
        problems += resume_to_reference(ctx, run, details)
    return {"passed": not problems, "problems": problems, "details": details,
            "expected": "exit 2 with one line naming the full disk; the last good "
                        "checkpoint loadable; the same command then resumes to the reference"}


def check_disk_failure(res: Result, run: Path, words: list, details: dict) -> list[str]:
    problems = []
    details["failed_run"] = res.brief()
    ok, why = one_line_error(res, words)
    if not ok:
        problems.append(why)
    state = inspect(run) if run.exists() else {"phase": "no run folder"}
    details["state"] = state
    good = [e for e in (state.get("checkpoint_epoch"), state.get("prev_checkpoint_epoch"))
            if isinstance(e, int)]
    if res.code == 2 and not good:
        problems.append("no loadable checkpoint left (checkpoint.pt "
                        f"{state.get('checkpoint_epoch')}, checkpoint.prev.pt "
                        f"{state.get('prev_checkpoint_epoch')})")
    temp = [f for f in state.get("files", []) if f.startswith(".")]
    if temp:
        details["temporary_files_left"] = temp
    return problems


def resume_to_reference(ctx: Context, run: Path, details: dict) -> list[str]:
    res = run_cmd(ctx, ctx.train_argv(run))
    details["resumed"] = res.brief()
    if res.code != 0:
        return [f"the resumed run exited {res.code}: {res.brief()['stderr_last']}"]
    c = compare_run(run, ctx.ref_train, ctx.args.epochs)
    details["end_state"] = c
    return [] if c["identical"] and c["records_ok"] and c["weights_identical"] \
        else [f"resumed run: {p}" for p in c["problems"]]


def disk_full_cache(ctx: Context) -> dict:
    """BAR's resized images written into a dataset cache on a full disk."""
    mode = disk_mode(ctx)
    cache_kib = 512
    argv = ["train", "--method", "erm", "--dataset", "bar", "--model", "mlp", "--data",
            "image_size=16", "--epochs", "1", "--train-subset", "200", "--eval-subset", "100",
            "--threads", "1", "--precision", "fp32", *ctx.data_dir_args()]
    details: dict = {"method": mode, "command": argv + ["--out", "RUN"]}
    problems = []
    base = ctx.scratch / "disk" / "cache"
    base.mkdir(parents=True, exist_ok=True)
    run = ctx.scratch / "disk" / "cache-run"
    if mode == "tmpfs":
        details["tmpfs_kib"] = cache_kib
        ctx.mount_tmpfs(base, cache_kib)
        preexec = None
    else:
        details["limit_bytes"] = cache_kib * 1024
        preexec = limit_file_size(cache_kib * 1024)
    cache = base / "derived"
    try:
        res = run_cmd(ctx, argv + ["--out", str(run)], env={"DEBIASKIT_CACHE": str(cache)},
                      preexec=preexec)
        details["failed_run"] = res.brief()
        ok, why = one_line_error(res, [("disk", "space")] if mode == "tmpfs" else [])
        if not ok:
            problems.append(why)
        left = sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                      if p.is_file() and not p.name.endswith(".lock"))
        details["cache_files_left"] = left
        if left:
            problems.append(f"files left in the cache: {left}")
        if run.exists() and any(run.iterdir()):
            problems.append(f"the run folder holds {sorted(p.name for p in run.iterdir())}")
        if mode == "tmpfs":
            ctx.resize_tmpfs(base, 64 * 1024)
        res = run_cmd(ctx, argv + ["--out", str(run)], env={"DEBIASKIT_CACHE": str(cache)})
        details["with_space"] = res.brief()
        entries = sorted(p.name for p in cache.rglob("*.json"))
        details["entries_with_space"] = entries
        if res.code != 0:
            problems.append(f"with space, the run exited {res.code}")
    finally:
        if mode == "tmpfs":
            ctx.unmount(base)
    return {"passed": not problems, "problems": problems, "details": details,
            "expected": "exit 2 with one line naming the full disk, nothing left in the cache "
                        "or the run folder; with space, the same command trains"}


# ------------------------------------------------------------------ damaged files


def kill_at_record(ctx: Context, run: Path, records: int):
    """Start the training run into ``run`` (its folder's parent created) and SIGKILL it
    once its metrics.jsonl holds ``records`` records; returns whether the kill landed and
    the process's result."""
    run.parent.mkdir(parents=True, exist_ok=True)
    proc = Proc(ctx, ctx.train_argv(run))
    wait_for_records(run, records, proc, ctx.timeout)
    landed = proc.kill(signal.SIGKILL)
    return landed, proc.wait(ctx.timeout)


def killed_after(ctx: Context, name: str, records: int) -> Path:
    """A run killed (SIGKILL) once ``records`` epochs have their checkpoints."""
    run = ctx.scratch / "damage" / name
    # record k+1 appears after checkpoint k
    landed, res = kill_at_record(ctx, run, records + 1)
    if not landed:
        raise RuntimeError(f"the run ended (exit {res.code}) before epoch {records + 1}'s "
                           "record; nothing to damage")
    return run


def damaged_checkpoint(ctx: Context, name: str, damage) -> dict:
    """Kill a run, damage its files with ``damage(run, details)`` (False: not applicable),
    rerun: repaired to the reference, or refused in one line; after a refusal, remove the
    damaged files as the message advises and rerun."""
    run = killed_after(ctx, name, 3)
    details: dict = {"after_kill": inspect(run)}
    applicable = damage(run, details)
    if applicable is False:
        return {"passed": None, "problems": [], "details": details,
                "outcome": "not applicable", "expected": "-"}
    problems = []
    res = run_cmd(ctx, ctx.train_argv(run))
    details["rerun"] = res.brief()
    if res.code == 0:
        outcome = "repaired"
        c = compare_run(run, ctx.ref_train, ctx.args.epochs)
        details["end_state"] = c
        if not (c["identical"] and c["records_ok"] and c["weights_identical"]):
            outcome = "resumed to a different result"
            problems.extend(c["problems"])
    else:
        ok, why = one_line_error(res)
        outcome = "refused" if ok else "failed"
        if not ok:
            problems.append(why)
        for f in details.get("damaged", []):
            (run / f).unlink(missing_ok=True)
        details["removed"] = details.get("damaged", [])
        after = resume_to_reference(ctx, run, details)
        if after:
            problems.extend(f"after removing the damaged file(s): {p}" for p in after)
    return {"passed": not problems, "problems": problems, "details": details,
            "outcome": outcome,
            "expected": "repaired (the run ends as the reference) or refused with one line, "
                        "exit 2; then, without the damaged file(s), the run ends as the "
                        "reference"}


def cut_half(run: Path, details: dict, names=(runs.CHECKPOINT,)) -> bool:
    """Cut each of ``names`` to half its size; False (nothing touched) if one is missing."""
    missing = [name for name in names if not (run / name).exists()]
    if missing:
        details["damaged"], details["missing"] = [], missing
        return False
    for name in names:
        os.truncate(run / name, (run / name).stat().st_size // 2)
    details["damaged"] = list(names)
    return True


def scramble(run: Path, details: dict, seed: int) -> bool:
    path = run / runs.CHECKPOINT
    if not path.exists():
        details["damaged"] = []
        return False
    size = path.stat().st_size
    at = size // 2
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(random.Random(seed).randbytes(4096))
    details["damaged"] = [runs.CHECKPOINT]
    details["scrambled_bytes"] = [at, at + 4096]
    return True


def torn_metrics(ctx: Context) -> dict:
    run = killed_after(ctx, "torn-metrics", 3)
    details = {"after_kill": inspect(run)}
    lines = (run / runs.METRICS).read_bytes().split(b"\n")
    last = next(line for line in reversed(lines) if line)
    with open(run / runs.METRICS, "ab") as f:
        f.write(last[: len(last) // 2])
    details["appended_bytes"] = len(last) // 2
    problems = resume_to_reference(ctx, run, details)
    return {"passed": not problems, "problems": problems, "details": details,
            "expected": "the torn line is dropped on resume; the run ends as the reference"}


# ------------------------------------------------------------------ main


def guarded(name: str, fn, *a) -> dict:
    """Run one case; an exception in the harness is the case's outcome, not a crash."""
    t0 = time.monotonic()
    try:
        res = fn(*a)
    except Exception as err:
        res = {"passed": False, "problems": [f"harness error: {type(err).__name__}: {err}"],
               "traceback": traceback.format_exc()}
    res["seconds"] = round(time.monotonic() - t0, 1)
    status = {True: "PASS", False: "FAIL", None: "n/a"}[res["passed"]]
    outcome = f" ({res['outcome']})" if res.get("outcome") else ""
    stray = res.get("details", {}).get("end_state", {}).get("extra_files")
    say(f"{name}: {status}{outcome}" + (f": {'; '.join(res['problems'][:4])}"
                                        if res["problems"] else "")
        + (f"; files the reference lacks: {stray}" if stray else ""))
    return res


def trial(fn, ctx: Context, i: int) -> dict:
    """One trial; an exception in the harness is the trial's outcome, not a crash."""
    t0 = time.monotonic()
    try:
        out = fn(ctx, i)
        out["seconds"] = round(time.monotonic() - t0, 1)
        return out
    except Exception as err:
        say(f"{fn.__name__} {i}: harness error: {type(err).__name__}: {err}")
        return {"trial": i, "kills": [], "resumes": 0, "exit_0": False, "identical": False,
                "weights_identical": False, "records_ok": False, "passed": False,
                "problems": [f"harness error: {type(err).__name__}: {err}"],
                "traceback": traceback.format_exc()}


def summarise(trials: list[dict]) -> dict:
    kills = [k for t in trials for k in t["kills"]]
    landed = [k for k in kills if k["landed"]]
    phases: dict = {}
    for k in landed:
        if "state" in k:  # a training kill: the point of the run its files show
            phase = re.sub(r"\d+", "N", k["state"].get("phase", "?"))
        else:  # a bench kill: how many runs it had found finished
            phase = f"{k['runs_finished_before']} run(s) finished before the start"
        phases[phase] = phases.get(phase, 0) + 1
    return {"trials": len(trials), "kills_landed": len(landed),
            "kills_by_signal": {s: sum(k["signal"] == s for k in landed)
                                for s in ("SIGKILL", "SIGTERM")},
            "kills_after_the_run_ended": len(kills) - len(landed),
            "kill_phases": phases,
            "ended_with_exit_0": sum(t["exit_0"] for t in trials),
            "identical": sum(bool(t["identical"]) for t in trials),
            "weights_identical": sum(bool(t["weights_identical"]) for t in trials),
            "records_ok": sum(bool(t["records_ok"]) for t in trials),
            "duplicated_epoch_records": sum(t.get("duplicated_epochs", 0) for t in trials),
            "torn_lines": sum(t.get("torn_lines", 0) for t in trials),
            "trials_with_extra_files": sum(bool(t.get("extra_files")) for t in trials),
            "reruns": sum(t["resumes"] for t in trials),
            "passed": sum(t["passed"] for t in trials)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=30, help="training trials")
    ap.add_argument("--bench-trials", type=int, default=10)
    ap.add_argument("--max-kills", type=int, default=3,
                    help="kills per training trial: 1 to N (bench trials: 1 to N-1)")
    ap.add_argument("--attempts", type=int, default=3,
                    help="reruns after the kills before a trial counts as not resumed")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"comma-separated groups of cases: {', '.join(GROUPS)}")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the training run")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--eval-subset", type=int, default=1000)
    ap.add_argument("--bench-preset", default="quick")
    ap.add_argument("--bench-epochs", type=int, default=3)
    ap.add_argument("--bench-seeds", type=int, default=2)
    ap.add_argument("--disk-full", choices=("auto", "tmpfs", "rlimit"), default="auto",
                    help="how to fill the disk: a small tmpfs (needs root), a file-size "
                         "limit (RLIMIT_FSIZE), or auto (tmpfs as root)")
    ap.add_argument("--quick", action="store_true", help="3 training trials of 6 epochs, 2 "
                    "bench trials, a bench of one seed (a smoke run of the harness)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--scratch", help="folder for the scratch folder (default: the system's "
                    "temporary folder)")
    ap.add_argument("--data-dir", help="data directory (default: $DEBIASKIT_DATA)")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds after which a command counts as hung and is killed")
    ap.add_argument("--out", help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(1)  # (the harness only compares tensors)
    if args.quick:
        args.trials, args.bench_trials = min(args.trials, 3), min(args.bench_trials, 2)
        args.bench_seeds, args.epochs = 1, min(args.epochs, 6)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    if set(groups) - set(GROUPS):
        ap.error(f"--only: unknown group(s) {sorted(set(groups) - set(GROUPS))}")
    if args.epochs < 5:
        ap.error("--epochs must be >= 5 (the damage cases kill after epoch 4's record)")
    if args.max_kills < 1 or args.attempts < 1:
        ap.error("--max-kills and --attempts must be >= 1")
    if args.out:
        try:
            runs.check_out(args.out, folder=False, example="faults.json")
        except DebiaskitError as err:
            ap.error(str(err))
    if args.scratch:
        Path(args.scratch).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="debiaskit-faults-", dir=args.scratch))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ctx = Context(args, scratch, env, random.Random(args.seed), timeout=args.timeout)
    res: dict = {"machine": machine(), "settings": {k: v for k, v in vars(args).items()},
                 "commands": {"train": " ".join(["debiaskit", *ctx.train_argv(Path("RUN"))]),
                              "bench": " ".join(["debiaskit", *ctx.bench_argv(Path("OUT"))])},
                 "disk_full_method": disk_mode(ctx), "scratch": str(scratch)}
    t0 = time.monotonic()
    say(f"scratch folder {scratch}")
    try:
        res["reference"] = {"train": reference_train(ctx)}
        if "bench" in groups or "collisions" in groups:
            res["reference"]["bench"] = reference_bench(ctx)
        if "train" in groups:
            res["train_trials"] = [trial(train_trial, ctx, i) for i in range(args.trials)]
        if "bench" in groups:
            res["bench_trials"] = [trial(bench_trial, ctx, i)
                                   for i in range(args.bench_trials)]
        cases = res["cases"] = {}
        if "collisions" in groups:
            cases["train_twice_1s_apart"] = guarded("train_twice_1s_apart", two_trains, ctx,
                                                    "1s-apart", "1s")
            cases["train_while_training"] = guarded("train_while_training", two_trains, ctx,
                                                    "while-training", "stopped")
            cases["killed_lock_taken_over"] = guarded("killed_lock_taken_over", killed_lock,
                                                      ctx)
            cases["two_benches_together"] = guarded("two_benches_together", two_benches, ctx)
        if "disk" in groups:
            cases["disk_full_checkpoint"] = guarded("disk_full_checkpoint",
                                                    disk_full_checkpoint, ctx)
            cases["disk_full_dataset_cache"] = guarded("disk_full_dataset_cache",
                                                       disk_full_cache, ctx)
        if "damage" in groups:
            cases["checkpoint_cut_in_half"] = guarded(
                "checkpoint_cut_in_half", damaged_checkpoint, ctx, "cut",
                lambda run, d: cut_half(run, d))
            cases["checkpoint_scrambled"] = guarded(
                "checkpoint_scrambled", damaged_checkpoint, ctx, "scrambled",
                lambda run, d: scramble(run, d, args.seed))
            cases["checkpoint_and_prev_cut"] = guarded(
                "checkpoint_and_prev_cut", damaged_checkpoint, ctx, "cut-both",
                lambda run, d: cut_half(run, d, (runs.CHECKPOINT, "checkpoint.prev.pt")))
            cases["torn_metrics_line"] = guarded("torn_metrics_line", torn_metrics, ctx)
    except KeyboardInterrupt:
        res["interrupted"] = True
        say("interrupted: writing what was measured")
    except RuntimeError as err:  # a reference run failed: nothing to compare with
        res["error"] = str(err)
        say(f"error: {err}")
    finally:
        for mnt in list(ctx.mounts):
            ctx.unmount(mnt)
        for pgid in set(ctx.started) & live_groups():  # (the harness's own commands)
            os.killpg(pgid, signal.SIGKILL)
        res["seconds"] = round(time.monotonic() - t0, 1)
        summary = res["summary"] = {}
        if res.get("train_trials"):
            summary["train"] = summarise(res["train_trials"])
        if res.get("bench_trials"):
            summary["bench"] = summarise(res["bench_trials"])
        summary["cases_with_extra_files"] = {
            k: v["details"]["end_state"]["extra_files"] for k, v in res.get("cases", {}).items()
            if v.get("details", {}).get("end_state", {}).get("extra_files")}
        summary["cases"] = {k: {True: "passed", False: "failed", None: "not applicable"}
                            [v["passed"]] + (f" ({v['outcome']})" if v.get("outcome")
                                             and v["passed"] is not None else "")
                            for k, v in res.get("cases", {}).items()}
        say(json.dumps(summary, indent=1))
        say(f"{res['seconds'] / 60:.1f} min")
        if args.out:
            runs.write_json(args.out, res)
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
