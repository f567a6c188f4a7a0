"""``debiaskit report``: one self-contained HTML page whose tables hold the runs' and the
bench folders' numbers, which renders in headless Chromium without console errors; bad
input gives one line, exit status 2 and no file."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from debiaskit import runs
from debiaskit.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
BENCHES = [RESULTS / "lff-cmnist", RESULTS / "sih-cmnist"]
#: Cells of lff-cmnist/report.md: ours (Vanilla, 95 % aligned) and the paper's (LfF, 95 %).
BENCH_CELLS = ["76.63 +- 0.89 (n=3)", "85.39 +- 0.94"]
#: Chromium logs a page's console messages (errors, uncaught exceptions) as "...:CONSOLE..."
#: lines on stderr; its own dbus / GPU / sandbox warnings never match these.
CONSOLE = re.compile(r":CONSOLE[:(\]]|Uncaught")


@pytest.fixture(scope="module")
def report(data_dir, tmp_path_factory):
    """A small real LfF run (with an explain-curves PNG) reported with the two committed
    bench folders; returns (run dir, summary, HTML path)."""
    from debiaskit.explain.curves import plot_run_curves
    from debiaskit.train import RunConfig, train

    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "run"
    summary = train(RunConfig(method="lff", data_params={"conflict_ratio": 0.02}, epochs=2,
                              train_subset=3000, eval_subset=1000, data_dir=data_dir,
                              progress=False, threads=1), run)
    plot_run_curves(run)
    out = tmp / "report.html"
    assert main(["report", str(run), *map(str, BENCHES), "--out", str(out)]) == 0
    return run, summary, out


def cells(html: str) -> list[str]:
    return [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


@pytest.mark.slow
def test_page_holds_the_numbers_and_embeds_everything(report):
    run, summary, out = report
    html = out.read_text()
    td = cells(html)
    for cell in BENCH_CELLS:
        assert cell in td
    test = summary["metrics"]["test"]
    for metric in ("accuracy", "unbiased", "aligned", "conflicting", "worst_group"):
        assert f"{test[metric]:.2f}" in td, metric
    assert summary["protocol"] in unescape(html)
    for caption in ("curves.png", "bias-1pct-seed0.png", "sample weights after the last epoch "
                    "(aligned vs conflicting)", "aligned / conflicting / worst-group accuracy"):
        assert caption in html, caption
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", html)
    # bench PNGs (lff 1, sih 2) + the run's curves.png + its curves and weights plots
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert "<script" not in html.lower()
    assert (run / runs.WEIGHTS).is_file()


def test_folder_search_finds_runs_below_a_folder(report, tmp_path, capsys):
    run, summary, _ = report
    out = tmp_path / "search.html"
    assert main(["report", str(run.parent), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    assert f"{summary['metrics']['test']['unbiased']:.2f}" in cells(html)
    assert f"Runs in {run.parent}" in html


def test_committed_bench_runs_are_capped_and_gradient_ratio_shown(tmp_path):
    out = tmp_path / "committed.html"
    assert main(["report", str(RESULTS / "cff-bgshift-cpu"), str(RESULTS / "one-pixel"),
                 "--max-runs", "2", "--out", str(out)]) == 0
    html = unescape(out.read_text())
    bench_runs = [p for p in (RESULTS / "cff-bgshift-cpu").iterdir() if runs.is_finished(p)]
    assert f"{len(bench_runs) - 2} more run folder(s) not shown" in html
    assert "saliency-original-deeplift_shap.png" in html
    ratio = runs.read_json(RESULTS / "one-pixel" / "gradient_ratio.json")
    td = cells(html)
    assert str(ratio["first_iteration_gr_below_1"]) in td
    assert f"{ratio['test_accuracy']['independent']:.2f}" in td
    assert "gradient_ratio.png" in html


def _fake_run(folder: Path) -> Path:
    """A finished run directory written by hand (config, two epochs, summary)."""
    folder.mkdir(parents=True)
    metrics = {"test": {"accuracy": 60.0, "aligned": 90.0, "conflicting": 30.0}}
    runs.write_json(folder / runs.CONFIG, {"protocol": "erm on a test", "run": {}})
    for epoch in (1, 2):
        runs.append_metrics(folder, {"epoch": epoch, "train": {"loss": 1.0 / epoch},
                                     "eval": metrics})
    runs.write_json(folder / runs.SUMMARY, {"protocol": "erm on a test", "metrics": metrics,
                                            "selected_epoch": 2, "epochs_trained": 2})
    return folder


def headings(html: str) -> list[str]:
    """The texts of the page's headings and of its collapsible runs' summaries."""
    return [unescape(re.sub(r"<[^>]+>", "", t)).strip()
            for t in re.findall(r"<(?:h[1-6]|summary)[^>]*>(.*?)</(?:h[1-6]|summary)>",
                                html, re.S)]


def test_a_single_run_is_not_headed_twice(tmp_path):
    run = _fake_run(tmp_path / "lff99")
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    assert headings(html) == ["debiaskit report", f"Run {run}"]
    assert "60.00" in cells(html) and html.count(f"{run}: finished") == 1
    # several runs: one heading for the folder, one summary per run, no extra "Runs"
    _fake_run(tmp_path / "runs" / "a"), _fake_run(tmp_path / "runs" / "b")
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert headings(out.read_text()) == ["debiaskit report", f"Runs in {tmp_path / 'runs'}",
                                         "a", "b"]


def _chromium(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox",
                           "--disable-gpu", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=timeout)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def chromium():
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")


def test_console_check_sees_errors(chromium, tmp_path):
    """The console check below is not blind: a page that logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); nope();</script>")
    found = console_lines(_chromium("--dump-dom", bad.as_uri()).stderr)
    assert any("boom" in line for line in found) and any("Uncaught" in line for line in found)


def test_page_renders_in_headless_chromium(chromium, report, tmp_path):
    _, summary, out = report
    proc = _chromium("--dump-dom", out.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    td = cells(proc.stdout)
    for cell in [*BENCH_CELLS, f"{summary['metrics']['test']['unbiased']:.2f}"]:
        assert cell in td
    shot = tmp_path / "shot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.parametrize("case", ["missing", "empty", "no-out-folder"])
def test_bad_input_one_line_exit_2_no_file(case, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    path = {"missing": tmp_path / "nope"}.get(case, tmp_path / "empty")
    out = tmp_path / ("nofolder/report.html" if case == "no-out-folder" else "report.html")
    if case == "no-out-folder":
        path = BENCHES[0]
    assert main(["report", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("debiaskit: error: ") and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no file, no temporary
