"""The ``denoisrec`` command line.

    denoisrec train [--config FILE] [--data DIR] [--model NAME] [--denoiser NAME] [-p k=v ...] [--set a.b=v ...]
    denoisrec gen-data --preset small --out data/small [--seed 0] [--rows N]
    denoisrec validate PATH [--schema FILE] [--split NAME ...] [--json OUT]
    denoisrec bench ingest [--data DIR] [--quick] ...

``python -m denoisrec.trainer`` is ``denoisrec train`` (the form torchrun and torchx start).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from denoisrec.trainer.config import Config, apply_overrides, parse_params


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see trainer/config.py for the tree)")
    p.add_argument("--data", help="dataset directory (data.path)")
    p.add_argument("--out", help="run output directory (run.out)")
    p.add_argument("--model", help="model name (model.name)")
    p.add_argument("--denoiser", help="denoiser name (denoiser.name)")
    p.add_argument("-p", "--denoiser-param", action="append", default=[], metavar="NAME=VALUE",
                   help="denoiser hyperparameter, repeatable (denoiser.params.NAME)")
    p.add_argument("--batch-size", type=int, help="rows per rank per step (data.batch_size)")
    p.add_argument("--epochs", type=int, help="run.epochs")
    p.add_argument("--steps", type=int, help="step budget (run.max_steps)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--sharding", help="sharding.sharding_type: table_wise, column_wise, row_wise, data_parallel")
    p.add_argument("--device", help="run.device: auto, cpu or cuda")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=3e-4 (repeatable)")


def config_from_args(a: argparse.Namespace) -> Config:
    cfg = Config.load(a.config) if a.config else Config()
    direct = {
        "data.path": a.data, "run.out": a.out, "model.name": a.model, "denoiser.name": a.denoiser,
        "data.batch_size": a.batch_size, "run.epochs": a.epochs, "run.max_steps": a.steps, "run.seed": a.seed,
        "sharding.sharding_type": a.sharding, "run.device": a.device,
    }
    for key, value in direct.items():
        if value is not None:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
    cfg.denoiser.params.update(parse_params(a.denoiser_param))
    return apply_overrides(cfg, a.set)


def cmd_train(a: argparse.Namespace) -> int:
    from denoisrec.trainer.dist import shutdown
    from denoisrec.trainer.train import train

    cfg = config_from_args(a)
    try:
        train(cfg)
    finally:
        shutdown()
    return 0


def cmd_gen_data(a: argparse.Namespace) -> int:
    from denoisrec.trainer.data.synthetic import describe, generate, preset_by_name, scaled

    preset = scaled(preset_by_name(a.preset), a.rows)
    stats = generate(a.out, preset, seed=a.seed, progress=not a.quiet)
    print(f"wrote {a.out} (preset {a.preset}, seed {a.seed}) in {stats['seconds']}s")
    print(describe(stats))
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
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


def cmd_bench_ingest(a: argparse.Namespace) -> int:
    from denoisrec.trainer.bench.ingest import main_cli

    return main_cli(a)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoisrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and evaluate a model (one process, or under torchrun/torchx)")
    add_train_args(t)
    t.set_defaults(fn=cmd_train)
    g = sub.add_parser("gen-data", help="write a synthetic noisy-feedback dataset with ground truth")
    g.add_argument("--preset", default="small", help="tiny, small, medium, product")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--rows", type=int, help="training rows (valid/test scaled alike); default: the preset's")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    g.set_defaults(fn=cmd_gen_data)
    v = sub.add_parser("validate", help="check a dataset against its schema and print a report (no training)")
    v.add_argument("path", help="dataset directory (or one split / file with --schema); local or a URI")
    v.add_argument("--schema", help="schema file (default: PATH/schema.json)")
    v.add_argument("--split", action="append", default=[], help="only this split (repeatable)")
    v.add_argument("--oov-policy", choices=["error", "hash"], help="override the schema's oov_policy")
    v.add_argument("--nan-policy", choices=["error", "impute"], help="override the schema's nan_policy")
    v.add_argument("--unique-ids", action="store_true", help="also check that sample ids are unique (8 B/row RAM)")
    v.add_argument("--json", help="also write the report as JSON")
    v.set_defaults(fn=cmd_validate)
    b = sub.add_parser("bench", help="benchmarks that print numbers")
    bsub = b.add_subparsers(dest="bench", required=True)
    from denoisrec.trainer.bench.ingest import add_arguments as add_ingest_arguments

    bi = bsub.add_parser("ingest", help="Parquet -> Batch rate vs a raw pyarrow scan and vs training; peak RSS")
    add_ingest_arguments(bi)
    bi.set_defaults(fn=cmd_bench_ingest)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"denoisrec {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
