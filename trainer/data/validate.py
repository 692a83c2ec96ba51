"""``denoisrec validate PATH``: check a dataset against its schema and report, without training.

Runs every check the reader runs (:mod:`.checks`), but instead of stopping at the first problem it reads
every row group of every split and counts them: unreadable, truncated or empty files, missing or mistyped
columns, nulls in id and label columns, labels outside {0, 1}, ids outside their table, NaN / ±inf / null
dense values, and optionally duplicate sample ids. A trusted-label column (``schema.trusted_label``) may be
null, but its other values must be 0 or 1 and it must hold a label somewhere (an all-null trusted column is
an error); a ``valid_random`` split, when present, is checked like the others and must have valid's columns. Out-of-table ids and bad dense values are errors under
the ``error`` policies and notes (what the reader would hash or impute) otherwise.

``PATH`` is a dataset directory (``train/``, ``valid/``, ``test/`` and ``schema.json``), or one split or
file with ``--schema``; local or any URI the reader accepts. The exit status is 1 when there is an error.

Example::

    report = validate_dataset("data/small")
    print(format_report(report))
    assert report.ok
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from denoisrec.trainer.data.checks import (
    diagnose_row_group,
    label_columns,
    must_be_whole,
    not_binary,
    not_binary_or_null,
    not_finite,
    oneline,
    out_of_table,
    schema_problems,
)
from denoisrec.trainer.data.fs import DataPath, open_parquet
from denoisrec.trainer.data.schema import RANDOM_SPLIT, SCHEMA_FILE, SPLITS, DataSchema
from denoisrec.trainer.errors import DataError

VALIDATE_BATCH_ROWS = 1 << 16


@dataclass
class Issue:
    """One kind of problem in one file (and column), summed over its row groups."""

    level: str  # "error", "warning" or "note"
    where: str  # file, or file: row group(s)
    column: Optional[str]
    message: str
    count: int = 1
    row_groups: List[int] = field(default_factory=list)

    def line(self) -> str:
        rg = ""
        if self.row_groups:
            shown = ", ".join(str(g) for g in self.row_groups[:8]) + (", ..." if len(self.row_groups) > 8 else "")
            rg = f": row group{'s' if len(self.row_groups) > 1 else ''} {shown}"
        col = f": column {self.column!r}" if self.column else ""
        return f"{self.level.upper():7s} {self.where}{rg}{col}: {self.message}"


@dataclass
class SplitReport:
    """What ``validate`` found in one split: its size, row-group spread and issues."""

    split: str
    path: str
    files: int = 0
    empty_files: int = 0
    other_files: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)  # hidden (_ or . prefixed) paths, skipped as Spark/Hive do
    row_groups: int = 0
    rows: int = 0
    bytes: int = 0
    rows_checked: int = 0
    positives: int = 0
    trusted_rows: int = 0  # rows with a trusted label (the schema's trusted_label not null)
    trusted_positives: int = 0
    min_row_group_rows: int = 0
    max_row_group_rows: int = 0
    issues: List[Issue] = field(default_factory=list)


@dataclass
class DatasetReport:
    """What ``validate`` found in a dataset: its schema, each split's report and dataset-level issues."""

    path: str
    schema_source: str
    schema_summary: str
    splits: List[SplitReport] = field(default_factory=list)
    issues: List[Issue] = field(default_factory=list)  # dataset-level (missing splits, duplicate ids)

    def all_issues(self) -> List[Issue]:
        return self.issues + [i for s in self.splits for i in s.issues]

    @property
    def errors(self) -> int:
        return sum(1 for i in self.all_issues() if i.level == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for i in self.all_issues() if i.level == "warning")

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ok"], d["errors"], d["warnings"] = self.ok, self.errors, self.warnings
        return d


class _Collector:
    """Issues of one file, merged per (level, column, kind); ``text(n)`` writes the message for n values."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.issues: Dict[tuple, Issue] = {}
        self.texts: Dict[tuple, Callable[[int], str]] = {}

    def add(
        self, level: str, column: Optional[str], kind: str, text: Callable[[int], str], count: int, row_group: int
    ) -> None:
        key = (level, column, kind)
        issue = self.issues.get(key)
        if issue is None:
            self.issues[key] = Issue(level, self.where, column, "", count, [row_group])
            self.texts[key] = text
        else:
            issue.count += count
            if issue.row_groups[-1] != row_group:
                issue.row_groups.append(row_group)

    def done(self) -> List[Issue]:
        for key, issue in self.issues.items():
            issue.message = self.texts[key](issue.count)
        return list(self.issues.values())


def _np(arr: pa.Array) -> np.ndarray:
    return arr.drop_null().to_numpy(zero_copy_only=False)


def _counted(rest: str) -> Callable[[int], str]:
    """A ``text(n)`` for :meth:`_Collector.add`: the count of values, then ``rest``."""
    return lambda n: f"{n:,} {rest}"


def _fixed(text: str) -> Callable[[int], str]:
    """A ``text(n)`` for :meth:`_Collector.add` that does not depend on the count."""
    return lambda _: text


def _check_batch(
    rb: pa.RecordBatch, schema: DataSchema, gt: bool, col: _Collector, g: int, first_row: int, positives: List[int]
) -> None:
    def at(i: int) -> str:
        return f"row {first_row + i:,} of the row group"

    for c in must_be_whole(schema, gt):
        arr = rb.column(c)
        if arr.null_count:
            where = at(int(np.flatnonzero(~np.asarray(arr.is_valid()))[0]))
            col.add(
                "error",
                c,
                "null",
                _counted(f"null value(s) (first at {where}); id and label columns must not contain nulls"),
                arr.null_count,
                g,
            )
    for f in schema.sparse:
        arr = rb.column(f.name)
        if f.multi_hot:
            child = arr.flatten()
            if child.null_count:
                col.add("error", f.name, "null-element", _counted("null id(s) inside lists"), child.null_count, g)
            vals = _np(child)
        else:
            vals = _np(arr)
        finding = out_of_table(vals, f.num_embeddings)
        if finding is not None:
            hashed = schema.oov_policy_of(f) == "hash"
            policy = (
                "; oov_policy 'hash' hashes them into the table"
                if hashed
                else "; oov_policy 'error' rejects them (set 'hash' to hash them)"
            )
            col.add(
                "note" if hashed else "error",
                f.name,
                "oov",
                _counted(f"id(s) outside the table [0, {f.num_embeddings:,}) (e.g. {finding.value}){policy}"),
                finding.count,
                g,
            )
    for c in schema.dense:
        v = rb.column(c).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        finding = not_finite(v)
        if finding is not None:
            impute = schema.nan_policy == "impute"
            policy = (
                f"; nan_policy 'impute' replaces them with {schema.impute_value}"
                if impute
                else "; nan_policy 'error' rejects them (set 'impute' to replace them)"
            )
            col.add(
                "note" if impute else "error",
                c,
                "nan",
                _counted(f"NaN, infinite or null value(s) (first at {at(finding.first)}){policy}"),
                finding.count,
                g,
            )
    for c in label_columns(schema, gt):
        v = _np(rb.column(c))
        finding = not_binary(v)
        if finding is not None:
            col.add(
                "error",
                c,
                "label",
                _counted(f"value(s) outside {{0, 1}} (e.g. {finding.value!r}); labels must be 0 or 1"),
                finding.count,
                g,
            )
        if c == schema.label:
            positives[0] += int((v == 1).sum())
    if schema.trusted_label is not None:
        c = schema.trusted_label
        v = rb.column(c).cast(pa.float32()).to_numpy(zero_copy_only=False)
        finding = not_binary_or_null(v)
        if finding is not None:
            col.add(
                "error",
                c,
                "trusted",
                _counted(
                    f"value(s) outside {{0, 1, null}} (e.g. {finding.value!r}); a trusted label must be 0 or 1, "
                    "null where the row has none"
                ),
                finding.count,
                g,
            )
        positives[1] += int((~np.isnan(v)).sum())
        positives[2] += int((v == 1).sum())


def validate_split(
    dp: DataPath, split: str, schema: DataSchema, ids: Optional[List[np.ndarray]], sample_every: int = 1
) -> SplitReport:
    """One split's report. ``sample_every`` > 1 decodes only every that many row groups (counted over the
    split; the footers and schemas of all files are still checked): the trainer's check before training.
    """
    rep = SplitReport(split=split, path=str(dp))
    seen = 0
    try:
        ls = dp.split_listing()  # the listing training uses (trainer/data/listing.py)
    except DataError as e:
        rep.issues.append(Issue("error", str(dp), None, f"{e}".split(": ", 1)[-1]))
        return rep
    for p in ls.problems:
        where, text = p.split(": ", 1)
        rep.issues.append(Issue("error", where, None, text))
    files = ls.files
    rep.other_files = [dp.display(o) for o in ls.other]
    rep.ignored = [dp.display(o) for o in ls.ignored]
    if not files:
        rep.issues.append(Issue("error", str(dp), None, "empty split: no .parquet files"))
        return rep
    gt = schema.ground_truth
    columns = schema.columns(with_ground_truth=gt, with_trusted=True)
    rg_sizes: List[int] = []
    positives = [0, 0, 0]  # observed positives, trusted rows, trusted positives
    for path, size in files:
        name = dp.display(path)
        rep.files += 1
        rep.bytes += size
        try:
            pf = open_parquet(dp, path)
        except DataError as e:
            rep.issues.append(Issue("error", name, None, str(e)[len(name) + 2 :]))
            continue
        try:
            problems = schema_problems(pf.schema_arrow, schema, True)  # ground truth only where the schema has it
            if problems:
                rep.issues += [Issue("error", name, None, p) for p in problems]
                continue
            meta = pf.metadata
            if meta.num_rows == 0:
                rep.empty_files += 1
                rep.issues.append(Issue("warning", name, None, "empty file (0 rows); the reader skips it"))
            col = _Collector(name)
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                rep.row_groups += 1
                rep.rows += n
                rg_sizes.append(n)
                seen += 1
                if (seen - 1) % sample_every:
                    continue
                pos = 0
                try:
                    for rb in pf.iter_batches(batch_size=VALIDATE_BATCH_ROWS, row_groups=[g], columns=columns):
                        _check_batch(rb, schema, gt, col, g, pos, positives)
                        if ids is not None and schema.sample_id is not None:
                            ids.append(_np(rb.column(schema.sample_id)).astype(np.int64))
                        pos += rb.num_rows
                        rep.rows_checked += rb.num_rows
                except Exception as e:  # noqa: BLE001 - a corrupt row group is reported, the rest still checked
                    text = f"cannot be decoded ({type(e).__name__}: {oneline(e)}){diagnose_row_group(pf, g, columns)}"
                    col.add("error", None, f"read-{g}", _fixed(text), 1, g)
                    continue
                if pos != n:
                    text = f"holds {pos:,} rows, its footer says {n:,}"
                    col.add("error", None, f"rows-{g}", _fixed(text), 1, g)
            rep.issues += col.done()
        finally:
            pf.close()
    rep.positives, rep.trusted_rows, rep.trusted_positives = positives
    if rg_sizes:
        rep.min_row_group_rows, rep.max_row_group_rows = min(rg_sizes), max(rg_sizes)
    if rep.rows == 0 and not any(i.level == "error" for i in rep.issues):
        rep.issues.append(Issue("error", str(dp), None, f"empty split: {rep.files} file(s) hold no rows"))
    return rep


def _describe_schema(schema: DataSchema) -> str:
    multi = sum(f.multi_hot for f in schema.sparse)
    ctx = schema.context_names
    roles = f"context features {ctx}" if ctx else "no context features (all preference)"
    return (
        f"{len(schema.sparse)} sparse ({multi} multi-hot), {len(schema.dense)} dense; {roles}; "
        f"label {schema.label!r}, "
        f"group {schema.group_id!r}, sample id {schema.sample_id!r}, ground truth "
        f"{'yes' if schema.ground_truth else 'no'}, trusted label {schema.trusted_label!r}; oov_policy={schema.oov_policy}, nan_policy={schema.nan_policy}"
    )


def validate_dataset(
    path: str,
    schema: Optional[DataSchema] = None,
    schema_source: Optional[str] = None,
    splits: Optional[Sequence[str]] = None,
    filesystem: Any = None,
    unique_ids: bool = False,
) -> DatasetReport:
    """Check ``path`` (a dataset directory, or one split / file) against ``schema`` (default: its
    ``schema.json``); see the module docstring.
    """
    dp = DataPath.resolve(path, filesystem)
    if schema is None:
        schema = DataSchema.load(str(dp) if filesystem is None else dp.path, filesystem)
        schema_source = str(dp.join(SCHEMA_FILE)) if dp.is_dir() else str(dp)
    report = DatasetReport(str(dp), schema_source or "given", _describe_schema(schema))
    ids: Optional[List[np.ndarray]] = [] if unique_ids else None
    has_splits = dp.is_dir() and any(dp.join(s).is_dir() for s in SPLITS)
    if splits is None and not has_splits:
        report.splits.append(validate_split(dp, dp.path.rstrip("/").rsplit("/", 1)[-1], schema, ids))
    else:
        wanted = list(splits or SPLITS)
        if splits is None and dp.join(RANDOM_SPLIT).is_dir():
            wanted.append(RANDOM_SPLIT)
        for s in wanted:
            sp = dp.join(s)
            if not sp.exists():
                report.issues.append(Issue("error", str(sp), None, f"missing split {s!r}"))
                continue
            report.splits.append(validate_split(sp, s, schema, ids))
        if RANDOM_SPLIT in wanted:
            report.issues += _random_split_columns(dp)
    report.issues += _trusted_issues(schema, report.splits)
    if ids is not None:
        allids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        dup = len(allids) - len(np.unique(allids))
        if dup:
            report.issues.append(Issue("error", str(dp), schema.sample_id, f"{dup:,} duplicate sample id(s)"))
    return report


def _first_file_columns(dp: DataPath) -> Optional[Dict[str, str]]:
    """Column name -> Arrow type of the split's first Parquet file (``None`` when it has none readable)."""
    try:
        files = dp.split_listing().files
        if not files:
            return None
        pf = open_parquet(dp, files[0][0])
    except DataError:
        return None
    try:
        return {f.name: str(f.type) for f in pf.schema_arrow}
    finally:
        pf.close()


def _random_split_columns(dp: DataPath) -> List[Issue]:
    """An error when the ``valid_random`` split's columns (names or types) are not valid's."""
    valid, rnd = _first_file_columns(dp.join("valid")), _first_file_columns(dp.join(RANDOM_SPLIT))
    if valid is None or rnd is None or valid == rnd:
        return []
    only_v = sorted(set(valid) - set(rnd))
    only_r = sorted(set(rnd) - set(valid))
    typed = sorted(c for c in set(valid) & set(rnd) if valid[c] != rnd[c])
    parts = [f"missing {only_v}" if only_v else "", f"extra {only_r}" if only_r else ""]
    parts.append(", ".join(f"{c!r} is {rnd[c]} (valid: {valid[c]})" for c in typed))
    text = "; ".join(p for p in parts if p)
    return [
        Issue(
            "error",
            str(dp.join(RANDOM_SPLIT)),
            None,
            f"split {RANDOM_SPLIT!r} has another schema than 'valid' ({text}); write it with valid's columns",
        )
    ]


def _trusted_issues(schema: DataSchema, splits: Sequence[SplitReport]) -> List[Issue]:
    """An all-null trusted column is an error; one with no rows in valid cannot select (a warning)."""
    c = schema.trusted_label
    checked = [s for s in splits if s.rows_checked]
    if c is None or not checked:
        return []
    # Splits checked without valid (validate --split train|test) may hold no trusted row by design (gen-data
    # puts them in valid): only an all-null column over valid and the others checked with it is an error.
    if sum(s.trusted_rows for s in checked) == 0 and any(s.split == "valid" for s in checked):
        names = ", ".join(s.split for s in checked)
        return [
            Issue(
                "error",
                "schema",
                c,
                f"the trusted label column is null on every row ({names}); fill it on the rows with a "
                "trusted label, or set trusted_label to null in the schema",
            )
        ]
    valid = [s for s in checked if s.split == "valid"]
    if valid and valid[0].trusted_rows == 0:
        return [
            Issue(
                "warning",
                "valid",
                c,
                "no trusted label in the valid split: eval.select_on=trusted has nothing to select on",
            )
        ]
    return []


def format_report(r: DatasetReport) -> str:
    lines = [f"validate {r.path}", f"  schema {r.schema_source}: {r.schema_summary}"]
    for s in r.splits:
        pos = f"positives {s.positives / s.rows_checked:.1%}" if s.rows_checked else "no rows checked"
        if s.trusted_rows:
            pos += f"; {s.trusted_rows:,} trusted label(s), {s.trusted_positives / s.trusted_rows:.1%} positive"
        rg = (
            f"{s.min_row_group_rows:,}-{s.max_row_group_rows:,} rows/row group"
            if s.min_row_group_rows != s.max_row_group_rows
            else f"{s.max_row_group_rows:,} rows/row group"
        )
        lines.append(
            f"  {s.split:5s}: {s.files} file(s), {s.row_groups} row groups ({rg}), {s.rows:,} rows, "
            f"{s.bytes / 1e6:,.1f} MB; {pos}"
        )
        if s.ignored:
            lines.append(
                f"         ignored {len(s.ignored)} hidden path(s) starting with _ or . (Spark/Hive convention, "
                f"as training does): {', '.join(s.ignored[:3])}" + (" ..." if len(s.ignored) > 3 else "")
            )
        if s.other_files:
            lines.append(
                f"         ignored {len(s.other_files)} non-Parquet file(s): {', '.join(s.other_files[:3])}"
                + (" ..." if len(s.other_files) > 3 else "")
            )
    issues = r.all_issues()
    lines += [i.line() for i in issues]
    if r.ok:
        lines.append("OK: the dataset matches its schema" + (f" ({r.warnings} warning(s))" if r.warnings else ""))
    else:
        lines.append(f"FAILED: {r.errors} error(s), {r.warnings} warning(s)")
    return "\n".join(lines)


def write_json(r: DatasetReport, path: str) -> None:
    with open(path, "w") as f:
        json.dump(r.to_dict(), f, indent=2)
