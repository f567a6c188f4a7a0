"""The command line: bad input gives one line and exit status 2 and writes nothing."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from debiaskit.cli import main

TINY = ["--train-subset", "3000", "--eval-subset", "1000", "--threads", "1"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def corrupt_dir(tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "mnist.npz").write_bytes(os.urandom(4096))
    return d


@pytest.mark.slow
@pytest.mark.parametrize("argv, says", [
    (["--dataset", "colored_mnits"], "unknown dataset"),
    (["--method", "lfff"], "unknown method"),
    (["--conflict-ratio", "0.95"], "out of range"),
    (["--data", "severity=9"], "severity"),
    (["--method", "groupdro", "--no-bias-labels"], "needs bias labels"),
    (["--selection", "best"], "model-selection policy"),
    (["--hp", "q=2"], "no hyper-parameter q"),  # erm has no q
])
def test_train_bad_input(capsys, tmp_path, data_dir, argv, says):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data-dir", data_dir, "--out", str(out), *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("debiaskit: error:")
    assert says in err or says in err.lower()
    assert not out.exists()


def test_missing_and_corrupt_data(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data-dir", str(tmp_path / "nowhere"),
                           "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "nowhere" in err
    bad = corrupt_dir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data-dir", str(bad), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "mnist.npz" in err
    assert not out.exists()


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "many"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_train_then_refuse_to_overwrite(capsys, tmp_path, data_dir):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--data-dir", data_dir, "--out", str(out),
                              "--method", "lff", "--epochs", "1", *TINY)
    assert code == 0 and "biased/test" in stdout and "model selection: last epoch" in stdout
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(capsys, "train", "--data-dir", data_dir, "--out", str(out),
                           "--method", "lff", "--epochs", "1", *TINY)
    assert code == 2 and "finished run" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, stdout, _ = run_cli(capsys, "explain", "curves", str(out))
    assert code == 0 and (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# every command with --out: a folder it creates or fills, or a file it writes
FOLDER_OUTS = [
    ["train", "--epochs", "1", "--train-subset", "300", "--eval-subset", "100"],
    ["bench", "quick", "--epochs", "1", "--workers", "1"],
    ["sweep", "erm", "--trials", "1", "--seeds", "1", "--epochs", "1", "--train-subset", "300",
     "--eval-subset", "100", "--workers", "1"],
    ["discover", "--dataset", "colored_mnist", "--epochs", "1", "--train-subset", "300"],
    ["export", "RUN"],
    ["explain", "lad-walk", "RUN"],
    ["explain", "gradient-ratio", "--iterations", "2"],
]
FILE_OUTS = [["report", "RUN"], ["explain", "curves", "RUN"], ["explain", "bias", "RUN"],
             ["explain", "lad", "RUN"], ["explain", "saliency", "RUN"]]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("bad", ["proc", "wrong_kind", "below_a_file"])
@pytest.mark.parametrize("argv", FOLDER_OUTS + FILE_OUTS, ids=lambda a: "-".join(a[:2]))
def test_bad_out_is_one_line_and_writes_nothing(capsys, tmp_path, monkeypatch, argv, bad):
    """/proc/x (nothing can be created there), a file where a folder goes (a folder where
    a file goes), a path below a regular file: one line, exit status 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RUN").mkdir()
    (tmp_path / "a-file").write_text("kept\n")
    (tmp_path / "a-folder").mkdir()
    out = {"proc": "/proc/x",
           "wrong_kind": "a-file" if argv in FOLDER_OUTS else "a-folder",
           "below_a_file": "a-file/sub"}[bad]
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    code, stdout, err = run_cli(capsys, *argv, "--out", out)
    assert code == 2 and stdout == "", err
    assert err.count("\n") == 1 and err.startswith("debiaskit: error:") and "Traceback" not in err
    assert f"--out {out}" in err, err
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before
    assert not Path("/proc/x").exists()


def test_explain_curves_needs_a_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "explain", "curves", str(tmp_path))
    assert code == 2 and "no metrics.jsonl records" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["curves", "bias", "lad", "lad-walk", "saliency"])
def test_explain_a_missing_run_dir_says_it_does_not_exist(capsys, tmp_path, kind):
    code, _, err = run_cli(capsys, "explain", kind, str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'nowhere'} does not exist" in err and "holds no" not in err
    assert not (tmp_path / "nowhere").exists()


def _tiny_folder(root: Path) -> Path:
    """Four 4 x 4 images of two classes with a bias column (metadata.csv)."""
    from PIL import Image

    (root / "img").mkdir(parents=True)
    rows = ["path,y,bias"]
    for i in range(4):
        Image.fromarray(np.full((4, 4, 3), 60 * i, np.uint8)).save(root / f"img/{i}.png")
        rows.append(f"img/{i}.png,{i % 2},{i // 2}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("argv", [["methods"], ["bench"], ["data", "info", "folder"]])
def test_a_closed_stdout_pipe_ends_quietly(capsys, monkeypatch, tmp_path, argv):
    """`debiaskit ... | head -1`: when the reader has gone, no BrokenPipeError traceback,
    exit status 1, and stdout then goes to devnull, so that Python's flush at exit cannot
    fail again."""
    if argv[0] == "data":
        argv = [*argv, "--data", f"path={_tiny_folder(tmp_path / 'set')}"]
        monkeypatch.setenv("DEBIASKIT_CACHE", str(tmp_path / "cache"))
    read, write = os.pipe()
    os.close(read)  # the reader left before the first line: every write fails
    with open(write, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        code = main(argv)
        print("more", file=pipe, flush=True)  # as the interpreter's flush at exit: no error
        monkeypatch.undo()
    assert code == 1 and capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_closed_stdout_pipe_ends_the_process_quietly():
    """The same through the interpreter: no traceback, no "Exception ignored" at exit."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "debiaskit", "methods"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert proc.stderr == "" and proc.returncode == 1, proc.stderr


def _parsers(parser, name="debiaskit"):
    """(command, parser) of the parser and every sub-command's, depth first."""
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_every_option_of_every_command_has_help():
    """`debiaskit COMMAND --help` explains every argument, with no measured numbers (times,
    memory, speed-ups) in the help text, which would go stale."""
    import argparse
    import re

    from debiaskit.cli import build_parser

    missing, measured = [], []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(what)
            elif re.search(r"(?<![\w.])\d+(\.\d+)?\s*(s|sec|seconds?|min|minutes?|h|hours?|"
                           r"[kMG]i?B|x faster)\b", action.help):
                measured.append(f"{what}: {action.help}")
    assert not missing, "no help text: " + ", ".join(missing)
    assert not measured, measured


@pytest.mark.slow
def test_data_info_prints_exact_counts(capsys, data_dir):
    code, out, _ = run_cli(capsys, "data", "info", "colored_mnist", "--aligned-ratio", "0.99",
                           "--data-dir", data_dir)
    assert code == 0
    assert "colored_mnist/train: 60000 images" in out and "colored_mnist/test: 10000" in out
    row0 = next(line for line in out.splitlines() if line.startswith("0 "))
    assert row0.split()[1] == "5864"
    assert out.count("checksum ") == 2


@pytest.mark.slow
def test_bench_runs_reports_and_skips_finished(capsys, tmp_path, data_dir):
    args = ["bench", "quick", "--epochs", "1", "--workers", "2", "--out", str(tmp_path),
            "--data-dir", data_dir]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    assert "| 99.0 |" in out and "50.34 +- 0.16" in out and "74.01 +- 2.21" in out
    assert "Model selection and length: last epoch" in out and "seeds [0]" in out
    assert "augmentation none, Adam, float32," in out
    assert "TEST-SET ORACLE" not in out  # one evaluated epoch: nothing to pick from
    assert "Memory: peak resident set of a worker process" in out
    import torch
    assert (f"Computed on: {json.loads((tmp_path / 'quick' / 'results.json').read_text())['machines'][0]['cpu']}"
            f" (") in out and f"torch capability {torch.backends.cpu.get_cpu_capability()}" in out
    report = tmp_path / "quick"
    assert (report / "report.md").exists() and (report / "curves.png").stat().st_size > 10000
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "2 of 2 runs already finished" in out
    # a table read before all its runs finished: only the finished ones, nothing trained
    code, out, _ = run_cli(capsys, "bench", "quick", "--epochs", "1", "--seeds", "2",
                           "--report-only", "--out", str(tmp_path), "--data-dir", data_dir)
    assert code == 0 and "report only: 2 of 4 runs finished; 2 not trained" in out
    assert not (report / "Vanilla" / "99.0" / "seed1").exists()
    assert "(n=1)" in out and "2 of the 4 planned runs have not finished" in out
    code, _, err = run_cli(capsys, "bench", "quick", "--report-only", "--out",
                           str(tmp_path / "none"), "--data-dir", data_dir)
    assert code == 2 and "no finished run" in err and not (tmp_path / "none").exists()
    code, out, _ = run_cli(capsys, *args)  # the seed-1 report did not change the runs
    assert code == 0 and "2 of 2 runs already finished" in out
    # the same folder with other options: an error, not the old runs reported as new ones
    before = (report / "report.md").read_text()
    code, _, err = run_cli(capsys, *args, "--hp", "lr=0.01")
    assert code == 2 and "holds a finished run with another configuration" in err
    assert (report / "report.md").read_text() == before


@pytest.mark.slow
def test_bench_reports_the_best_epoch_as_a_test_set_oracle(capsys, tmp_path, data_dir):
    code, out, _ = run_cli(capsys, "bench", "quick", "--epochs", "3", "--methods", "Vanilla",
                           "--out", str(tmp_path), "--data-dir", data_dir)
    assert code == 0 and "TEST-SET ORACLE" in out
    run = tmp_path / "quick" / "Vanilla" / "99.0" / "seed0"
    per_epoch = [json.loads(line)["eval"]["test"]["unbiased"]
                 for line in (run / "metrics.jsonl").read_text().splitlines()]
    numbers = json.loads((tmp_path / "quick" / "results.json").read_text())["numbers"]
    cell = numbers["Vanilla/99.0"]
    assert len(per_epoch) == 3 and cell["values"] == [per_epoch[-1]]
    assert cell["oracle"]["values"] == [max(per_epoch)]
    assert f"| Vanilla | 99.0 | test | {per_epoch[-1]:.2f} +- 0.00 | {max(per_epoch):.2f}" in out
    # and the last epoch's training statistics (here the loss), not the first's
    losses = [json.loads(line)["train"]["loss"]
              for line in (run / "metrics.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "quick" / "results.json").read_text())["last_epoch_training"]
    assert stats["Vanilla/99.0"]["loss"] == [losses[-1], 0.0] and losses[-1] != losses[0]
    assert f"| Vanilla | 99.0 | loss | {losses[-1]:.4g} +- 0 | 1 |" in out


@pytest.mark.slow
def test_bench_hyper_parameters_over_the_preset(capsys, tmp_path, data_dir):
    code, out, _ = run_cli(capsys, "bench", "quick", "--epochs", "1", "--workers", "1",
                           "--methods", "Vanilla", "--hp", "lr=0.0005", "--out", str(tmp_path),
                           "--data-dir", data_dir)
    assert code == 0 and "'lr': 0.0005" in out
    stored = json.loads((tmp_path / "quick" / "Vanilla" / "99.0" / "seed0" / "config.json")
                        .read_text())
    assert stored["run"]["hparams"]["lr"] == 0.0005
    code, _, err = run_cli(capsys, "bench", "quick", "--hp", "lambda_adv=2",
                           "--out", str(tmp_path / "b"), "--data-dir", data_dir)
    assert code == 2 and "lambda_adv" in err and not (tmp_path / "b").exists()


def test_bench_bad_input(capsys, tmp_path):
    code, _, err = run_cli(capsys, "bench", "lff-table9", "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown bench preset" in err
    code, _, err = run_cli(capsys, "bench", "lff-cmnist", "--methods", "SiH",
                           "--out", str(tmp_path / "b"))
    assert code == 2 and "no method SiH" in err
    code, _, err = run_cli(capsys, "bench", "quick", "--precision", "fp8",
                           "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown precision 'fp8'" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_bench_in_bf16_says_so(capsys, tmp_path, data_dir, monkeypatch):
    from debiaskit import precision
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    args = ("bench", "quick", "--epochs", "1", "--workers", "2", "--precision", "bf16",
            "--out", str(tmp_path), "--data-dir", data_dir)
    code, _, err = run_cli(capsys, *args)  # refused on a CPU without native bf16 ...
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no native bf16" in err
    assert not any(tmp_path.iterdir())
    code, out, _ = run_cli(capsys, *args, "--force-precision")  # ... unless forced
    assert code == 0 and "bf16 autocast (the papers train in float32)" in out
    summary = json.loads((tmp_path / "quick" / "LfF" / "99.0" / "seed0" / "summary.json")
                         .read_text())
    assert "bf16 autocast" in summary["protocol"]


@pytest.mark.slow
def test_bench_on_a_local_ray_cluster(tmp_path, data_dir):
    ray = pytest.importorskip("ray", reason="the Ray backend is tested where ray is installed "
                                            "(pip install -e '.[test,ray]')")
    from debiaskit.bench import run_bench

    lines = []
    try:
        text = run_bench("quick", tmp_path, epochs=1, data_dir=data_dir, log=lines.append,
                         ray_address="local")
    finally:
        ray.shutdown()
    assert lines[0].startswith("precision for mlp on colored_mnist: auto: fp32")
    assert "running 2 on Ray cluster local" in lines[1]
    assert len([x for x in lines if "seed 0: unbiased" in x]) == 2
    assert "| 99.0 |" in text and "(n=1)" in text


@pytest.mark.slow
def test_bench_rows_with_their_own_dataset_and_columns(tmp_path, data_dir):
    from debiaskit.bench.presets import Row, TablePreset
    from debiaskit.bench.tables import write_report
    from debiaskit.bench.runner import execute, plan

    preset = TablePreset(
        name="two-datasets", title="two datasets, two test conditions", source="a test",
        dataset="colored_mnist",
        rows=(Row("BG", {"conflict_ratio": 0.0}, dataset="bg_colored_mnist",
                  splits={"independent": "unbiased", "conflicting": "unbiased"}),
              Row("FG", {"conflict_ratio": 0.0, "conditioned": True},
                  splits={"independent": "test", "conflicting": "test"},
                  method_run={"Vanilla": {"hparams": {"lr": 0.002}}})),
        methods={"Vanilla": "erm"}, columns=("independent", "conflicting", "conditioned"),
        metric="accuracy", column_metrics={"conflicting": "conflicting"},
        published={"Vanilla": {"BG": {"independent": (0.0, 0.0), "conditioned": (10.64, 0.65)}}},
        references={"ReBias": {"BG": 22.7, "other": 1.0}},
        run={"epochs": 1, "train_subset": 1000, "eval_subset": 500, "selection": "last"})
    planned = plan(preset, tmp_path, seeds=1, data_dir=data_dir)
    assert [p.config.dataset for p in planned] == ["bg_colored_mnist", "colored_mnist"]
    assert planned[0].config.hparams == {} and planned[1].config.hparams == {"lr": 0.002}
    assert execute(planned, workers=1, log=lambda _: None) == []
    text = write_report(preset, planned, tmp_path)
    header = text.splitlines()[2]
    assert "Vanilla independent (ours)" in header and "Vanilla conditioned (paper)" in header
    bg = next(line for line in text.splitlines() if line.startswith("| BG |"))
    assert "10.64 +- 0.65" in bg and bg.count("(n=1)") == 3
    assert "independent: BG 'unbiased', FG 'test'" in text
    # the conflicting column reports the same split's bias-conflicting cells
    summary = json.loads((planned[0].run_dir / "summary.json").read_text())["metrics"]
    cells = bg.split(" | ")
    assert cells[1].startswith(f"{summary['unbiased']['accuracy']:.2f} +- 0.00")
    assert cells[3].startswith(f"{summary['unbiased']['conflicting']:.2f} +- 0.00")
    assert "column conflicting: bias-conflicting accuracy" in text
    assert "Published, not run here: ReBias: BG 22.70." in text


def _captured_axes(monkeypatch, module) -> list:
    """Make ``module.save_png`` keep the figure's axes instead of writing a PNG."""
    axes = []
    monkeypatch.setattr(module, "save_png", lambda fig, path: axes.extend(fig.axes))
    return axes


@pytest.mark.slow
def test_accuracy_curves_at_100_and_0_percent_are_inside_the_axes(tmp_path, monkeypatch):
    """A curve at 100 % (or 0 %) must not hide under the axes frame: the y-limits leave a
    margin above 100 and below 0, in the bench report's curves.png, explain curves' PNG
    and explain gradient-ratio's test-accuracy panel."""
    from debiaskit.bench import tables
    from debiaskit.bench.presets import Row, TablePreset
    from debiaskit.explain import curves, gradient_ratio

    def check(axes):
        assert axes
        for ax in axes:
            low, high = ax.get_ylim()
            values = np.concatenate([line.get_ydata() for line in ax.get_lines()])
            assert values.max() == 100.0 and values.min() == 0.0
            assert low < 0.0 and 100.0 < high <= 105.0, (low, high)

    preset = TablePreset(name="p", title="t", source="s", dataset="colored_mnist",
                         rows=(Row("99", {}),), methods={"ERM": "erm"}, published={})
    axes = _captured_axes(monkeypatch, tables)
    tables.plot_curves(preset, {"curves": {("ERM", "99"): [[(1, 90.0, 0.0), (2, 100.0, 5.0)]]}},
                       tmp_path / "curves.png")
    check(axes)

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "eval": {"test": {"aligned": a, "conflicting": c}}}) + "\n"
        for e, a, c in ((1, 90.0, 0.0), (2, 100.0, 5.0))))
    axes = _captured_axes(monkeypatch, curves)
    curves.plot_run_curves(tmp_path / "run")
    check(axes)

    trace = gradient_ratio.GradientRatioTrace(
        iterations=[1, 2], loss=[1.0, 0.5], accuracy=[50.0, 60.0], causal_norm=[1.0, 1.0],
        confounding_norm=[1.0, 2.0], test_accuracy={"test": 100.0},
        test_curve={1: {"test": 0.0}, 2: {"test": 100.0}}, settings={
            "num_classes": 10, "dataset": "one_pixel_mnist", "model": "mlp"})
    axes = _captured_axes(monkeypatch, gradient_ratio)
    gradient_ratio.plot_gradient_ratio(trace, tmp_path / "gradient_ratio.png")
    check([ax for ax in axes if ax.get_title() == "test accuracy (%)"])


def test_paired_difference_to_the_baseline_by_hand():
    # seed by seed: method (80, 82, 90) vs ERM (70, 75, 79): differences (10, 7, 11), mean
    # 9.33, t(0.975, 2) = 4.3027 x sd 2.0817 / sqrt(3) = 5.17 (an unpaired interval, a
    # normal quantile or ddof 0 all give other bounds)
    from debiaskit.bench.presets import Row, TablePreset
    from debiaskit.bench.tables import paired_difference, paired_lines
    from debiaskit.bench.runner import PlannedRun

    d = paired_difference([80.0, 82.0, 90.0], [70.0, 75.0, 79.0])
    assert d["mean"] == pytest.approx(28 / 3)
    assert (d["low"], d["high"]) == (pytest.approx(4.162188, abs=1e-5),
                                     pytest.approx(14.504478, abs=1e-5))
    preset = TablePreset(name="p", title="t", source="s", dataset="bg_shift",
                         rows=(Row("95", {}),), methods={"ERM": "erm", "F": "cff"},
                         published={}, columns=("original",), metric="accuracy",
                         paired_baseline="ERM")
    planned = [PlannedRun(m, "95", seed, None, None) for m in ("ERM", "F") for seed in range(3)]
    erm = {0: 70.0, 1: 75.0, 2: 79.0}
    f = {0: 80.0, 2: 90.0}  # seed 1 unfinished: pairs (0, 2) only, differences 10 and 11
    results = {"by_seed": {("ERM", "95", "original"): {k: {"accuracy": v} for k, v in erm.items()},
                           ("F", "95", "original"): {k: {"accuracy": v} for k, v in f.items()}}}
    numbers = {}
    lines = paired_lines(preset, planned, results, numbers)
    assert "| F | 95 | original | +10.50 | [+4.15, +16.85] | 2 |" in lines
    assert numbers["F/95/original"]["paired"]["seeds"] == [0, 2]


def test_report_lists_stage_statistics_over_seeds():
    from debiaskit.bench.tables import stage_lines

    stages = {f"LAD/BG-100/seed{i}": {"walk": {"seconds": s, "checksum": "ab", "ok": True},
                                      "vqvae": {"codes_in_use": 20}}
              for i, s in enumerate((10.0, 20.0))}
    lines = stage_lines(stages)
    assert "Stages of LAD, BG-100 (mean +- std over 2 seeds" in lines[1]
    assert "| walk.seconds | 15 +- 7.1 |" in lines          # std with ddof = 1
    assert "| vqvae.codes_in_use | 20 +- 0 |" in lines
    assert not any("checksum" in line or ".ok" in line for line in lines)
    assert stage_lines({}) == []


def test_lad_presets_plan_the_paper_settings(tmp_path, data_dir):
    from debiaskit.bench.presets import get_preset
    from debiaskit.bench.runner import plan

    for name, model in (("lad-mnist", "resnet20"), ("lad-mnist-cpu", "mlp")):
        preset = get_preset(name)
        planned = {(p.method, p.row): p.config for p in plan(preset, tmp_path, 1,
                                                             data_dir=data_dir)}
        assert set(planned) == {(m, r) for m in ("Vanilla", "LAD") for r in ("BG-100", "FG-100",
                                "BG-99.9", "BG-99.7", "BG-99.5", "BG-99.0")}
        bg, fg = planned["LAD", "BG-100"], planned["LAD", "FG-100"]
        assert (bg.dataset, bg.data_params["conflict_ratio"]) == ("bg_colored_mnist", 0.0)
        assert (fg.dataset, fg.data_params["conditioned"]) == ("colored_mnist", True)
        # LAD: the walk-length rule (no alpha or steps given); LAD-paper: the paper's
        assert "walk_steps" not in bg.hparams and "alpha" not in fg.hparams
        assert bg.hparams["vq_downsample"] == 2 and fg.hparams == {}
        paper = {(p.method, p.row): p.config for p in plan(preset, tmp_path, 1,
                                                           methods=["LAD-paper"],
                                                           data_dir=data_dir)}
        assert paper["LAD-paper", "BG-100"].hparams["walk_steps"] == 20
        assert paper["LAD-paper", "FG-100"].hparams == {"walk_steps": 7, "alpha": 0.1}
        assert planned["LAD", "BG-99.7"].data_params["conflict_ratio"] == 0.003
        assert planned["Vanilla", "FG-100"].hparams == {}
        assert {c.model for c in planned.values()} == {model}
        assert {c.augment for c in planned.values()} == {"crop_affine"}
        assert preset.published_value("Vanilla", "BG-100", "conflicting") == (0.0, 0.0)


def _exited(pid: int) -> bool:
    try:  # a zombie (state Z) has exited; nothing may reap orphans in a container
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_bench_workers_exit_when_the_runner_is_killed():
    """SIGKILL reaches only the runner; its pool workers must not train on for nobody."""
    script = (
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from debiaskit.bench.runner import exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=get_context('spawn'),\n"
        "                               initializer=exit_with_parent, initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n")
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(runner.stdout.readline())
    assert not _exited(worker)
    runner.kill()
    runner.wait()
    deadline = time.monotonic() + 30
    while not _exited(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _exited(worker)


def test_every_preset_plans_and_reports_before_any_run(tmp_path, data_dir):
    # each registered preset's runs are valid configurations, and its report (published
    # numbers, references, protocol) renders while nothing has run yet
    from debiaskit.bench.presets import PRESETS
    from debiaskit.bench.tables import write_report
    from debiaskit.bench.runner import plan

    for name, preset in PRESETS.items():
        planned = plan(preset, tmp_path / name, seeds=1, methods=list(preset.methods),
                       data_dir=data_dir)
        assert {p.method for p in planned} == set(preset.methods), name
        (tmp_path / name).mkdir()
        text = write_report(preset, planned, tmp_path / name)
        assert text.startswith(f"# {preset.title}") and "not run" in text, name
        for ref in preset.references:
            assert f"Published, not run here: {ref}:" in text, name


def test_hyper_parameters_merge_key_by_key_from_run_to_method_to_command_line(tmp_path,
                                                                             data_dir):
    # a preset's run-wide learning rate survives a method's own hyper-parameters (GBA on
    # CIFAR-10S: SGD lr 0.1 for F and C, plus GBA's lambda and D's learning rate)
    from debiaskit.bench.presets import get_preset
    from debiaskit.bench.runner import plan

    preset = get_preset("gba-cifar10s-cpu")
    gba = plan(preset, tmp_path, 1, ["GBA"], data_dir=data_dir)[0].config.hparams
    assert gba["lr"] == 0.1 and gba["weight_decay"] == 5e-4
    assert gba["disc_lr"] == 0.01 and gba["classifier_hidden"] == 256
    over = plan(preset, tmp_path, 1, ["GBA-n"], data_dir=data_dir,
                hparams={"lr": 0.05})[0].config.hparams
    assert over["lr"] == 0.05 and over["mask_rule"] == "gba_n" and over["weight_decay"] == 5e-4
