"""``denoisrec validate PATH``: check a dataset against its schema and print a report (no training).

The checks are :mod:`denoisrec.trainer.data.validate` (the reader's own); exit status 1 when any fails.

Example::

    denoisrec validate data/small --split train --json report.json
"""

from __future__ import annotations

import argparse

HELP = "check a dataset against its schema and print a report (no training)"


def add_arguments(v: argparse.ArgumentParser) -> None:
    """Dataset, schema, splits, policy overrides and the JSON report."""
    v.add_argument("path", help="dataset directory (or one split / file with --schema); local or a URI")
    v.add_argument("--schema", help="schema file (default: PATH/schema.json)")
    v.add_argument("--split", action="append", default=[], help="only this split (repeatable)")
    v.add_argument("--oov-policy", choices=["error", "hash"], help="override the schema's oov_policy")
    v.add_argument("--nan-policy", choices=["error", "impute"], help="override the schema's nan_policy")
    v.add_argument("--unique-ids", action="store_true", help="also check that sample ids are unique (8 B/row RAM)")
    v.add_argument("--json", help="also write the report as JSON")


def run(a: argparse.Namespace) -> int:
    """Validate, print the report; 0 when every check passed, else 1."""
    from denoisrec.trainer.data.schema import DataSchema
    from denoisrec.trainer.data.validate import format_report, validate_dataset, write_json

    schema = DataSchema.load(a.schema) if a.schema else None
    if schema is not None and (a.oov_policy or a.nan_policy):
        schema = schema.with_policies(a.oov_policy, a.nan_policy)
    report = validate_dataset(a.path, schema, a.schema, a.split or None, unique_ids=a.unique_ids)
    print(format_report(report))
    if a.json:
        write_json(report, a.json)
    return 0 if report.ok else 1
