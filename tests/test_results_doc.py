"""The numbers in the tables of docs/results.md equal the committed results files they
come from.

Every Markdown table in docs/results.md is either described in ``TABLES`` below or listed,
with its reason, in ``UNTIED_TABLES``; a new table fails ``test_every_table_is_accounted_for``
until it is given one or the other. For each described table, every cell of every row is
either compared with its source or deliberately left out: a column or row of published
paper numbers (a header or first cell that says "paper") is never compared, and so is the
text column that names the row. A column or row the description does not know fails the
test, so nothing is skipped by accident.

The source file is found from the link(s) in the prose between the table and the heading or
table before it (a bench's report.md stands for the results.json beside it, a folder for
the file the table reads inside it); the descriptions only add what a link cannot say
(which doc column is which key, a second file linked after the table, a per-row file
column). A number is compared as shown: the file's value is rounded to the number of
decimals the document shows (and, where the bench runner writes a fixed number of
decimals, the document must show that many), so a changed digit on either side fails, with
a message naming the table, row, column, document value and file value.

Reads only committed files; no data, no network, well under a second.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
RESULTS = ROOT / "benchmarks" / "results"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text] or ![alt], then
                         r"\(\s*(<[^>\n]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")  # (target "title")
#: one shown number: a value, maybe "+- std", maybe a ratio's "x"
SHOWN = re.compile(r"(?P<value>-?\d+(?:\.\d+)?)(?:\s*\+-\s*(?P<std>\d+(?:\.\d+)?))?x?")
PUBLISHED = re.compile(r"\bpaper\b", re.IGNORECASE)  # a column or row of published numbers
SEEDS = re.compile(r"^(?P<name>.*?)\s*\((?:(?P<n>\d+) seeds|seed (?P<seed>\d+))\)$")


def doc_text() -> str:
    """The text of docs/results.md (a function, so a check of this test can swap it)."""
    return DOC.read_text(encoding="utf-8")


@functools.cache
def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def read_json(path: Path):
    """A committed JSON file, read once."""
    return _json(path)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------------------
# The tables of the document


@dataclass
class Table:
    section: str  # the heading it sits under
    line: int  # its header's line number
    header: list[str]
    rows: list[list[str]]
    before: str  # the prose since the previous heading or table (code blocks left out)

    @property
    def name(self) -> str:
        return f"{self.section} [{self.header[0]}]"


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables() -> list[Table]:
    """Every Markdown table of docs/results.md, outside fenced code blocks."""
    found, section, prose, fence = [], "", [], False
    lines = doc_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            fence = not fence
        elif not fence and (heading := HEADING.match(line)):
            section, prose = heading.group(1), []
        elif not fence and line.lstrip().startswith("|"):
            start = i
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(split_row(lines[i]))
                i += 1
            assert len(block) >= 2 and all(set(c) <= set("-: ") for c in block[1]), (
                f"docs/results.md line {start + 1}: a table without a separator row")
            found.append(Table(section, start + 1, block[0], block[2:], "\n".join(prose)))
            prose = []
            continue
        elif not fence:
            prose.append(line)
        i += 1
    return found


def links(text: str) -> list[Path]:
    """The files and folders under benchmarks/results/ that ``text`` links to."""
    out = []
    for target in INLINE_LINK.findall(text):
        target = unquote(target.strip("<>")).split("#")[0]
        path = (DOC.parent / target).resolve()
        if path.is_relative_to(RESULTS) and path not in out:
            out.append(path)
    return out


def linked_file(table: Table, name: str | None = None) -> Path:
    """The one results file the prose before ``table`` links to: the link itself, or, with
    ``name``, the file of that name in the linked folder (or beside the linked file)."""
    found = {(p if p.is_dir() else p.parent) / name if name else p for p in links(table.before)}
    assert len(found) == 1, (f"table {table.name!r}: expected one source link in the prose "
                             f"before it, found {sorted(map(rel, found))}")
    path = found.pop()
    assert path.is_file(), f"table {table.name!r}: its source {rel(path)} does not exist"
    return path


# ---------------------------------------------------------------------------------------
# Comparing a cell


@dataclass
class Expected:
    """One number a cell shows: the file's value, maybe its std, and where it was read."""
    value: float | None
    std: float | None = None
    where: str = ""
    n: int | None = None  # seeds behind it, where the file says


@dataclass
class Cell:
    row: str
    column: str
    shown: str
    expected: list[Expected]  # one per " / "-separated part of the cell
    seeds: int | None = None  # what the row or header says ("(3 seeds)", "(seed 0)" = 1)
    wrong: str | None = None  # a difference in words, found by the reader (labels, yes/no)


def fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.00"


def decimals_of(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def problems(table: Table, cell: Cell, decimals: int | None) -> tuple[list[str], int]:
    """What differs between the document's cell and the file's numbers, and how many
    numbers of the cell were compared."""
    where = f"table {table.name!r}, row {cell.row!r}, column {cell.column!r}"
    if cell.wrong:
        return [f"{where}: {cell.wrong}"], 0
    parts = [p.strip() for p in cell.shown.split(" / ")]
    if len(parts) != len(cell.expected):
        return [(f"{where}: doc {cell.shown!r} has {len(parts)} parts, the file gives "
                 f"{len(cell.expected)}")], 0
    out, compared = [], 0
    for part, exp in zip(parts, cell.expected):
        match = SHOWN.fullmatch(part)
        if not match:
            out.append(f"{where}: doc {part!r} is not a number")
            continue
        if exp.value is None:
            out.append(f"{where}: doc {part}, file has no value ({exp.where})")
            continue
        shown = {"value": (match["value"], exp.value)}
        if match["std"] is not None:
            if exp.std is None:
                out.append(f"{where}: doc {part} shows a std, the file has none ({exp.where})")
                continue
            shown["std"] = (match["std"], exp.std)
        for what, (text, value) in shown.items():
            compared += 1
            if decimals is not None and decimals_of(text) != decimals:
                out.append(f"{where}: doc {what} {text} shows {decimals_of(text)} decimals, "
                           f"the file's numbers are written with {decimals}")
            elif fmt(value, decimals_of(text)) != fmt(float(text), decimals_of(text)):
                out.append(f"{where}: doc {what} {text}, file "
                           f"{fmt(value, decimals_of(text))} ({value!r}, {exp.where})")
        if cell.seeds is not None and exp.n is not None and exp.n != cell.seeds:
            out.append(f"{where}: doc says {cell.seeds} seed(s), the file averages "
                       f"{exp.n} ({exp.where})")
    return out, compared


def seeds_of(label: str) -> tuple[str, int | None]:
    """``"GBA (3 seeds)"`` -> ("GBA", 3); ``"GBA-n (seed 0)"`` -> ("GBA-n", 1)."""
    match = SEEDS.match(label)
    if not match:
        return label, None
    return match["name"], int(match["n"]) if match["n"] else 1


# ---------------------------------------------------------------------------------------
# Readers: one per kind of source file


def bench_number(path: Path, key: str) -> Expected:
    """Mean +- std over seeds of one cell of a bench's results.json (bench/tables.py)."""
    entry = read_json(path)["numbers"].get(key)
    where = f"{rel(path)}: numbers[{key!r}]"
    if entry is None or "mean" not in entry:
        return Expected(None, where=where)
    return Expected(entry["mean"], entry["std"], where, entry["n"])


@dataclass
class Bench:
    """A table of a bench's results.json (``numbers["METHOD/ROW"]`` or
    ``numbers["METHOD/ROW/COLUMN"]``), found beside the report.md linked before the table.

    method: "header" (a header cell "M", "M (ours)", or "M (LABEL)" read from
    ``other[LABEL]``) or "row" (the row's first cell, "M (3 seeds)" also checks n).
    row: the doc column holding the preset row, or ``=VALUE`` for a preset with one row.
    column: None (no preset columns), a doc column holding the preset column, "header"
    (every other header cell is a preset column), or a list: the one doc column ``parts[0]``
    shows the preset columns ``parts[1:]`` as " / "-separated parts.
    names: document words -> preset column names where they differ.
    """
    method: str
    row: str
    column: str | list | None = None
    names: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)  # header label -> another results.json
    decimals: int | None = 2  # bench/tables.py writes "{:.2f}"

    def cells(self, table: Table) -> Iterator[Cell]:
        source = linked_file(table, "results.json")
        label_columns = {c for c in (self.row, self.column)
                         if isinstance(c, str) and c in table.header}
        for cells in table.rows:
            row = dict(zip(table.header, cells))
            if PUBLISHED.search(cells[0]):
                continue  # published numbers of another dataset or paper
            preset_row = self.row[1:] if self.row.startswith("=") else row[self.row]
            for column, shown in row.items():
                if PUBLISHED.search(column) or column in label_columns:
                    continue
                if self.method == "row":
                    if column == table.header[0]:
                        continue
                    method, seeds = seeds_of(cells[0])
                    path = source
                else:
                    match = re.fullmatch(r"(.*?)(?: \((\w+)\))?", column)
                    method, label, seeds = match[1], match[2] or "ours", None
                    assert label == "ours" or label in self.other, (
                        f"table {table.name!r}: column {column!r} is neither ours, paper "
                        f"nor in the description's other sources")
                    path = source if label == "ours" else ROOT / self.other[label]
                key = [method, preset_row]
                if isinstance(self.column, list):
                    assert column == self.column[0], (
                        f"table {table.name!r}: unknown column {column!r}")
                    parts = [bench_number(path, "/".join(key + [self.names.get(c, c)]))
                             for c in self.column[1:]]
                    yield Cell(cells[0], column, shown, parts, seeds)
                    continue
                if self.column == "header":
                    key.append(self.names.get(column, column))
                elif self.column is not None:
                    key.append(self.names.get(row[self.column], row[self.column]))
                label = (f"{cells[0]} / {row[self.column]}" if self.column in label_columns
                         else cells[0])
                yield Cell(label, column, shown, [bench_number(path, "/".join(key))], seeds)


@dataclass
class Paired:
    """The paired differences of a bench's results.json (``numbers["METHOD/ROW/COLUMN"]
    ["paired"]``: each seed's run minus the baseline's run of the same seed), shown per
    test set as "mean / low / high" of the 95 % interval, rows "METHOD (N seeds)"."""
    row: str
    names: dict  # doc column -> preset column
    decimals: int | None = 2

    def cells(self, table: Table) -> Iterator[Cell]:
        source = linked_file(table, "results.json")
        numbers = read_json(source)["numbers"]
        for cells in table.rows:
            method, seeds = seeds_of(cells[0])
            for column, shown in zip(table.header[1:], cells[1:]):
                assert column in self.names, f"table {table.name!r}: unknown column {column!r}"
                key = f"{method}/{self.row}/{self.names[column]}"
                paired = numbers.get(key, {}).get("paired")
                where = f"{rel(source)}: numbers[{key!r}]['paired']"
                parts = ([Expected(None, where=where)] if paired is None else
                         [Expected(paired[k], where=f"{where}[{k!r}]", n=paired["n"])
                          for k in ("mean", "low", "high")])
                yield Cell(cells[0], column, shown, parts, seeds)


@dataclass
class Saliency:
    """benchmarks/cff_saliency.py's JSON: ``table["METHOD / ROW"][FIGURE]``; the seeds
    in the header ("method (3 seeds)") or in each row ("ERM (5 seeds)")."""
    names: dict  # doc column -> figure
    row: str
    decimals: int | None = 2

    def cells(self, table: Table) -> Iterator[Cell]:
        source = linked_file(table)
        data = read_json(source)["table"]
        _, all_seeds = seeds_of(table.header[0])  # "method (3 seeds)", or per row
        for cells in table.rows:
            if PUBLISHED.search(cells[0]):
                continue
            method, seeds = seeds_of(cells[0])
            seeds = all_seeds if seeds is None else seeds
            key = f"{method} / {self.row}"
            for column, shown in zip(table.header[1:], cells[1:]):
                assert column in self.names, f"table {table.name!r}: unknown column {column!r}"
                figure = data.get(key, {}).get(self.names[column])
                where = f"{rel(source)}: table[{key!r}][{self.names[column]!r}]"
                yield Cell(cells[0], column, shown,
                           [Expected(figure["mean"], figure["std"], where, figure["n"])
                            if figure else Expected(None, where=where)], seeds)


@dataclass
class ProtocolSearch:
    """benchmarks/cff_protocol_erm.py's JSON: ``rows[CANDIDATE][test set]``; the row label's
    numbers (digit sizes, correlation, epochs, background pool) are checked too."""
    rows: dict  # doc row label -> key of "rows"
    names: dict  # doc column -> test set
    decimals: int | None = 2

    def cells(self, table: Table) -> Iterator[Cell]:
        source = linked_file(table)
        data = read_json(source)["rows"]
        size = re.search(r"(\d+) px", table.header[0])
        for cells in table.rows:
            assert cells[0] in self.rows, f"table {table.name!r}: unknown row {cells[0]!r}"
            key = self.rows[cells[0]]
            entry = data[key]
            where = f"{rel(source)}: rows[{key!r}]"
            label = {"image_size": int(size[1]) if size else None,
                     "fg_min, fg_max": re.search(r"digits (\d+)-(\d+) px", cells[0]),
                     "conflict_ratio": re.search(r"(\d+) %", cells[0]),
                     "epochs": re.search(r"(\d+) epochs", cells[0]),
                     "bg_pool": re.search(r"from (\d+) photographs", cells[0])}
            facts = {"image_size": entry["data"]["image_size"],
                     "fg_min, fg_max": (entry["data"]["fg_min"], entry["data"]["fg_max"]),
                     "conflict_ratio": round(100 * (1 - entry["data"]["conflict_ratio"])),
                     "epochs": entry["run"]["epochs"], "bg_pool": entry["data"].get("bg_pool")}
            for fact, shown in label.items():
                if isinstance(shown, re.Match):
                    shown = tuple(map(int, shown.groups()))
                    shown = shown[0] if len(shown) == 1 else shown
                if shown is not None and shown != facts[fact]:
                    yield Cell(cells[0], table.header[0], cells[0], [],
                               wrong=f"doc {fact} {shown}, file {facts[fact]} ({where})")
            for column, shown in zip(table.header[1:], cells[1:]):
                if column == "both bars":
                    both = entry["original_ge_95"] and entry["drop_to_mixed_next_ge_25"]
                    if shown.split(",")[0] != ("yes" if both else "no"):
                        yield Cell(cells[0], column, shown, [], wrong=(
                            f"doc {shown!r}, file original_ge_95 and drop_to_mixed_next_ge_25 "
                            f"{both} ({where})"))
                    continue
                assert column in self.names, f"table {table.name!r}: unknown column {column!r}"
                yield Cell(cells[0], column, shown, [Expected(
                    entry[self.names[column]], where=f"{where}[{self.names[column]!r}]")])


def seed_runs(trial: Path) -> list[Path]:
    runs = sorted(p for p in trial.glob("seed*") if (p / "summary.json").is_file())
    assert runs, f"{rel(trial)} holds no finished seed"
    return runs


def last_record(run: Path, part: str) -> dict:
    """The ``part`` ("train" or "eval") of the last epoch's record in metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    return [r[part] for r in records if part in r][-1]


@dataclass
class Sweep:
    """``debiaskit sweep``'s folder: sweep.json (each trial's hyper-parameters and its
    score by the rule) and the trials' seed runs (summary.json at the selected epoch,
    metrics.jsonl per epoch). The row's first cell is the searched hyper-parameter."""
    hparam: str
    #: doc column -> (what it reads, key): ("rule", the score in sweep.json),
    #: ("selected", summary.json metrics[split]["accuracy"] at the run's selected epoch),
    #: ("last_eval", the last epoch's eval[split]["accuracy"] in metrics.jsonl) or
    #: ("last_train", the last epoch's training statistic in metrics.jsonl); runs' figures
    #: are means over the trial's seeds
    columns: dict
    decimals: int | None = None  # the document rounds each column its own way

    def cells(self, table: Table) -> Iterator[Cell]:
        source = linked_file(table, "sweep.json")
        trials = read_json(source)["trials"]
        for cells in table.rows:
            found = [t for t, entry in trials.items()
                     if float(entry["hparams"][self.hparam]) == float(cells[0])]
            assert len(found) == 1, f"table {table.name!r}: {self.hparam} {cells[0]} is in " \
                                    f"{len(found)} trials of {rel(source)}"
            trial = found[0]
            runs = seed_runs(source.parent / trial)
            for column, shown in zip(table.header[1:], cells[1:]):
                assert column in self.columns, f"table {table.name!r}: unknown column {column!r}"
                kind, key = self.columns[column]
                if kind == "rule":
                    value = trials[trial][key]
                    where = f"{rel(source)}: trials[{trial!r}][{key!r}]"
                elif kind == "selected":
                    value = mean(read_json(r / "summary.json")["metrics"][key]["accuracy"]
                                 for r in runs)
                    where = (f"{rel(source.parent / trial)}/seed*/summary.json: "
                             f"metrics[{key!r}]['accuracy'], the run's selected epoch")
                elif kind == "last_eval":
                    value = mean(last_record(r, "eval")[key]["accuracy"] for r in runs)
                    where = (f"{rel(source.parent / trial)}/seed*/metrics.jsonl: last "
                             f"epoch's eval[{key!r}]['accuracy']")
                else:
                    assert kind == "last_train", kind
                    value = mean(last_record(r, "train")[key] for r in runs)
                    where = (f"{rel(source.parent / trial)}/seed*/metrics.jsonl: last "
                             f"epoch's train[{key!r}]")
                yield Cell(cells[0], column, shown, [Expected(value, where=where)])


@dataclass
class Speed:
    """benchmarks/speed.py's JSON, one file per row, linked in the row's ``file`` column."""
    file_column: str
    names: dict  # doc column -> (section, key)
    label_columns: tuple = ()
    decimals: int | None = None  # ratios are shown to 2 decimals or 3 significant digits

    def cells(self, table: Table) -> Iterator[Cell]:
        for cells in table.rows:
            row = dict(zip(table.header, cells))
            found = links(row[self.file_column])
            assert len(found) == 1 and found[0].is_file(), (
                f"table {table.name!r}, row {cells[0]!r}: expected one linked results file")
            data = read_json(found[0])
            for column, shown in row.items():
                if column == self.file_column or column in self.label_columns:
                    continue
                assert column in self.names, f"table {table.name!r}: unknown column {column!r}"
                section, key = self.names[column]
                yield Cell(cells[0], column, shown, [Expected(
                    data[section][key], where=f"{rel(found[0])}: {section}.{key}")])


# ---------------------------------------------------------------------------------------
# What each table shows. Keys: (section heading, first header cell).

CFF_TEST_SETS = {"Original": "original", "Mixed-Same": "mixed_same",
                 "Mixed-Rand": "mixed_rand", "Mixed-Next": "mixed_next"}

TABLES: dict[tuple[str, str], object] = {
    # lff-cmnist/results.json; "(before)" is the earlier run, linked just after the table
    ("LfF Table 2, Colored MNIST", "aligned (%)"): Bench(
        method="header", row="aligned (%)",
        other={"before": "benchmarks/results/lff-cmnist-2026-11-30/results.json"}),
    # lad-mnist-cpu/results.json; the doc's "conflicting only" is the preset's "conflicting"
    ("LAD Table 1, MNIST rows, CPU preset", "row"): Bench(
        method="header", row="row", column="column",
        names={"conflicting only": "conflicting"}),
    # gba-cmnist-cpu/results.json; the last column is the paper's
    ("GBA Table 4, Colored MNIST, CPU preset", "aligned (%)"): Bench(
        method="header", row="aligned (%)"),
    # gba-cmnist/results.json (100 epochs, both scalings); the last column is the paper's
    ("GBA Table 4, Colored MNIST, 100 epochs", "aligned (%)"): Bench(
        method="header", row="aligned (%)"),
    # gba-cifar10s-cpu/results.json; "ours" = aligned / conflicting / mean / gap, one row
    ("GBA Tables 1 and 5, CIFAR-10S, CPU preset", "method"): Bench(
        method="row", row="=95", column=["ours", "aligned", "conflicting", "mean", "gap"]),
    # cff-bgshift-cpu/results.json; the IN-9 row is the paper's, on another dataset
    ("CF/F on the synthetic background-shift set, CPU preset", "method"): Bench(
        method="row", row="=95", column="header", names=CFF_TEST_SETS),
    # cff_protocol_erm.json; the candidates' keys, which the labels describe in words
    ("CF/F: a CPU protocol where ERM leans on the background", "candidate (16 px)"):
        ProtocolSearch(
            rows={"digits 8-12 px, 95 %, 20 epochs": "s16-95/seed0",
                  "digits 11-14 px, 95 %, 30 epochs": "s16-95-d14/seed0",
                  "digits 11-14 px, 99 %, 30 epochs": "s16-99-d14/seed0",
                  "digits 8-12 px, 95 %, backgrounds from 20 photographs per class":
                      "s16-95-pool20/seed0",
                  "digits 11-14 px, 95 %, backgrounds from 20 photographs per class":
                      "s16-95-d14-pool20/seed0"},
            names=CFF_TEST_SETS),
    # cff-bgshift16-sal-sweep/: "the rule" is the sweep's score of each trial (held-out
    # mixed accuracy at the run's best held-out epoch), "held-out" the run's held-out
    # accuracy at that selected epoch, the Sal share the last epoch's, as the header says.
    # (A column of last-epoch accuracies would read ("last_eval", "val_mixed" or "val").)
    ("CF/F: a CPU protocol where ERM leans on the background", "lambda"): Sweep(
        hparam="sal_lambda",
        columns={"held-out mixed (the rule)": ("rule", "heldout_mixed"),
                 "held-out": ("selected", "val"),
                 "Sal's share of the loss, last epoch": ("last_train", "sal_share")}),
    # cff-bgshift16-cpu/results.json: each arm's mean +- std, then its paired difference
    # to ERM as mean / low / high of the 95 % interval
    ("CF/F on the 16-px protocol, CPU preset", "method"): Bench(
        method="row", row="=95", column="header", names=CFF_TEST_SETS),
    ("CF/F on the 16-px protocol, CPU preset", "method - ERM"): Paired(
        row="95", names=CFF_TEST_SETS),
    # cff-bgshift16-cpu/saliency.json, seeds per row
    ("CF/F saliency on the 16-px protocol", "method"): Saliency(
        row="95", names={"AUPR, DeepLiftShap": "aupr deeplift_shap",
                         "AUPR, input gradient": "aupr gradient",
                         "next-class shift (points)": "next-class shift"}),
    # cff-bgshift-cpu/saliency.json; the IN-9 row is the paper's
    ("CF/F saliency focus and background reliance", "method (3 seeds)"): Saliency(
        row="95", names={"AUPR, DeepLiftShap": "aupr deeplift_shap",
                         "AUPR, input gradient": "aupr gradient",
                         "next-class shift (points)": "next-class shift"}),
    # speed_precision*.json, linked in each row
    ("bf16 against float32", "CPU"): Speed(
        file_column="file", label_columns=("CPU",),
        names={"MLP step, bf16 / fp32 time": ("precision_mlp", "bf16_over_fp32"),
               "ResNet-20 step": ("precision_resnet20", "bf16_over_fp32")}),
}

#: Tables of docs/results.md that no committed file backs, with the reason. Keys as in
#: TABLES. Empty: every table of the document today has its source above.
UNTIED_TABLES: dict[tuple[str, str], str] = {}


# ---------------------------------------------------------------------------------------
# The tests


def find(key: tuple[str, str]) -> Table:
    found = [t for t in tables() if (t.section, t.header[0]) == key]
    assert len(found) == 1, f"docs/results.md has {len(found)} tables {key!r} (expected one)"
    return found[0]


def mismatches(key: tuple[str, str]) -> tuple[list[str], int]:
    """Every difference between the table ``key`` and its source, and how many numbers
    were compared."""
    table, spec = find(key), TABLES[key]
    out, numbers = [], 0
    for cell in spec.cells(table):
        found, compared = problems(table, cell, spec.decimals)
        out += found
        numbers += compared
    return out, numbers


def test_every_table_is_accounted_for():
    """Each table of docs/results.md is checked against a file or allowed, with a reason,
    to have none; and every description still names a table of the document."""
    keys = [(t.section, t.header[0]) for t in tables()]
    assert len(keys) == len(set(keys)), "two tables share a heading and first header cell"
    unknown = [k for k in keys if k not in TABLES and k not in UNTIED_TABLES]
    assert not unknown, (f"tables of docs/results.md without a source description in "
                         f"tests/test_results_doc.py: {unknown}")
    stale = [k for k in [*TABLES, *UNTIED_TABLES] if k not in keys]
    assert not stale, f"described tables no longer in docs/results.md: {stale}"
    assert not set(TABLES) & set(UNTIED_TABLES)


@pytest.mark.parametrize("key", list(TABLES), ids=[f"{s} [{h}]" for s, h in TABLES])
def test_table_equals_its_source(key):
    """Every number of the table's own (not published) cells equals its source file's,
    rounded as the document shows it."""
    found, numbers = mismatches(key)
    assert numbers, f"no number of table {key!r} was compared"
    assert not found, "docs/results.md differs from the results files:\n" + "\n".join(found)
