"""Table presets: the grid of a published table and the numbers it reports.

A preset names the dataset protocol, its rows (bias amounts, converted to the API's
``conflict_ratio`` convention), the methods, the training settings and the published
mean +- std per (method, row), so a bench run prints ours next to theirs. The presets of
each paper live in a module of their own (:mod:`.lff`, :mod:`.sih`, :mod:`.lad`); this
module holds the two dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    """One table row: its bias amount and, where rows differ in more than that, the
    dataset, the split behind each column and per-method run settings of its own."""

    label: str          # as the paper prints it, e.g. "99.0" (% aligned)
    data_params: dict
    dataset: str | None = None       # None: the preset's dataset
    splits: dict = field(default_factory=dict)      # column -> this row's evaluation split
    method_run: dict = field(default_factory=dict)  # display -> RunConfig fields (hparams merge)


@dataclass(frozen=True)
class TablePreset:
    name: str
    title: str
    source: str                      # paper and table
    dataset: str
    rows: tuple[Row, ...]
    methods: dict[str, str]          # display name -> registered method
    # display -> row -> (mean, std), or with several columns -> {column: (mean, std)}
    published: dict[str, dict]
    split: str = "test"              # evaluation split the table reports
    columns: tuple[str, ...] = ()    # test conditions side by side (default: just `split`)
    metric: str = "unbiased"         # metric the table reports
    column_metrics: dict = field(default_factory=dict)  # column -> its own metric
    row_header: str = "ratio aligned (%)"
    run: dict = field(default_factory=dict)  # RunConfig fields shared by every run
    method_run: dict = field(default_factory=dict)  # display -> RunConfig fields of its own
    data_seed: int | None = 0        # fixed data (None: regenerate data per seed)
    default_seeds: int = 3
    default_methods: tuple[str, ...] | None = None  # None: every method of the preset
    notes: str = ""
    # published numbers of methods not implemented here: name -> row -> value
    references: dict = field(default_factory=dict)
    # a method every other is compared with seed by seed (paired differences, 95 % interval)
    paired_baseline: str | None = None

    def table_columns(self) -> tuple[str, ...]:
        return self.columns or (self.split,)

    def split_of(self, row: Row, column: str) -> str:
        """The evaluation split that ``row`` reports in ``column``."""
        return row.splits.get(column, column)

    def metric_of(self, column: str) -> str:
        """The metric that ``column`` reports."""
        return self.column_metrics.get(column, self.metric)

    def published_value(self, method: str, row: str, column: str):
        """Published (mean, std) of ``method`` in ``row`` / ``column``, or None."""
        value = self.published.get(method, {}).get(row)
        return value.get(column) if isinstance(value, dict) else value

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)
