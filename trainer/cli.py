"""The ``denoisrec`` command line.

    denoisrec train [--config FILE] [--preset lcd|dart] [--data DIR] [--model NAME] [--denoiser NAME] [-p k=v ...]
                    [--baseline RUN_DIR] [--resume auto|never|DIR] [--set a.b=v ...]
    denoisrec predict --model-file RUN_DIR/model.pt --data FILE_OR_DIR --out scores.parquet [--keep-columns a,b]
    denoisrec export RUN_DIR [--format torchscript|exported-program] [--calibrate platt]   (docs/serving.md)
    denoisrec gen-data --preset small --out data/small [--seed 0] [--rows N]
    denoisrec launch [-s SCHEDULER] -j NxM [component options] -- [train options]   (torchx; docs/launch.md)
    denoisrec convert {movielens,deca} PATH --out DIR [--noisy-max-rating R] [--seed S]
    denoisrec bench {throughput,quality,peers,ingest} [options]   (see trainer/bench/)
    denoisrec validate PATH [--schema FILE] [--split NAME ...] [--json OUT]

``python -m denoisrec.trainer`` is ``denoisrec train`` (the form torchrun and torchx start).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from denoisrec.trainer.config import Config, apply_overrides, parse_params


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see trainer/config.py for the tree)")
    p.add_argument("--preset", help="the papers' set-ups: lcd, dart (applied after --config, before the other "
                                    "flags; see trainer/presets.py)")
    p.add_argument("--data", help="dataset directory (data.path)")
    p.add_argument("--out", help="run output directory (run.out)")
    p.add_argument("--model", help="model name (model.name)")
    p.add_argument("--denoiser", help="denoiser name (denoiser.name)")
    p.add_argument("-p", "--denoiser-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="denoiser hyperparameter(s) (denoiser.params.NAME), repeatable: -p a=1 b=2 or -p a=1 -p b=2")
    p.add_argument("--batch-size", type=int, help="rows per rank per step (data.batch_size)")
    p.add_argument("--epochs", type=int, help="run.epochs")
    p.add_argument("--steps", type=int, help="step budget (run.max_steps)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--sharding", help="sharding.sharding_type: table_wise, column_wise, row_wise, data_parallel")
    p.add_argument("--device", help="run.device: auto, cpu or cuda")
    p.add_argument("--baseline", help="run directory whose summary.json is the RealImp baseline (run.baseline)")
    p.add_argument("--resume", help="run.resume: auto (default: <out>/checkpoints/latest if present), never, "
                                    "or a checkpoint directory")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set optim.lr=3e-4 run.epochs=2 (repeatable; torchx "
                        "rejects a repeated option, so give them as one list there)")


def config_from_args(a: argparse.Namespace) -> Config:
    """``--config`` file, then ``--preset``, then the flags, then ``--set`` (later wins)."""
    def flags_and_sets(cfg: Config) -> Config:
        direct = {
            "data.path": a.data, "run.out": a.out, "model.name": a.model, "denoiser.name": a.denoiser,
            "data.batch_size": a.batch_size, "run.epochs": a.epochs, "run.max_steps": a.steps, "run.seed": a.seed,
            "sharding.sharding_type": a.sharding, "run.device": a.device, "run.baseline": a.baseline,
            "run.resume": a.resume,
        }
        for key, value in direct.items():
            if value is not None:
                section, name = key.split(".")
                setattr(getattr(cfg, section), name, value)
        cfg.denoiser.params.update(parse_params(a.denoiser_param))
        return apply_overrides(cfg, a.set)

    load = lambda: Config.load(a.config) if a.config else Config()  # noqa: E731
    if a.preset:
        from denoisrec.trainer.presets import apply_preset

        cfg = load()
        cfg.model.name = flags_and_sets(load()).model.name  # the preset maps onto the final model's options
        apply_preset(cfg, a.preset)
        return flags_and_sets(cfg)
    return flags_and_sets(load())


def cmd_train(a: argparse.Namespace) -> int:
    from denoisrec.trainer.dist import shutdown
    from denoisrec.trainer.train import train

    cfg = config_from_args(a)
    try:
        train(cfg)
    finally:
        shutdown()
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from denoisrec.trainer.predict_cli import run_predict

    return run_predict(a)


def cmd_export(a: argparse.Namespace) -> int:
    from denoisrec.trainer.predict_cli import run_export

    return run_export(a)


def cmd_gen_data(a: argparse.Namespace) -> int:
    from denoisrec.trainer.data.synthetic import describe, generate, preset_by_name, scaled, with_logging

    preset = with_logging(scaled(preset_by_name(a.preset), a.rows), a.logging)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoisrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and evaluate a model (one process, or under torchrun/torchx)")
    add_train_args(t)
    t.set_defaults(fn=cmd_train)
    pr = sub.add_parser("predict", help="score a Parquet file or directory with an exported model file")
    pr.add_argument("--model-file", required=True, help="<run out>/model.pt written by training")
    pr.add_argument("--data", required=True, help="a .parquet file or a directory of them (e.g. data/small/test)")
    pr.add_argument("--out", required=True, help="output Parquet file of scores")
    pr.add_argument("--batch-size", type=int, default=8192)
    pr.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pr.add_argument("--keep-columns", help="input columns copied beside the scores, comma-separated, e.g. "
                                           "user_id,item_id,row_id (default: the schema's sample id)")
    pr.add_argument("--calibrator", help="calibrator.json written by denoisrec export --calibrate platt: adds "
                                         "score_calibrated")
    pr.add_argument("--no-metrics", action="store_true", help="skip the metrics of labelled input (they keep "
                                                              "13 bytes a row in memory)")
    pr.set_defaults(fn=cmd_predict)
    ex = sub.add_parser("export", help="write a torch-only serving artefact of a trained run (docs/serving.md)")
    ex.add_argument("run", help="run directory (its model.pt) or a model file")
    ex.add_argument("--format", default="torchscript", help="torchscript or exported-program")
    ex.add_argument("--out", help="output directory (default: RUN/serving)")
    ex.add_argument("--calibrate", help="platt: fit a Platt calibrator on the validation split and include it")
    ex.add_argument("--valid", help="validation split for --calibrate (default: the run's data.path/valid)")
    ex.set_defaults(fn=cmd_export)
    sub.add_parser("launch", add_help=False,
                   help="torchx run a component (train, bench, gen_data) on a scheduler: "
                        "denoisrec launch -j 1x2 -- --data DIR (see docs/launch.md)")
    g = sub.add_parser("gen-data", help="write a synthetic noisy-feedback dataset with ground truth")
    g.add_argument("--preset", default="small", help="tiny, small, medium, product, criteo")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--rows", type=int, help="training rows (valid/test scaled alike); default: the preset's")
    g.add_argument("--logging", choices=["ranker", "independent"],
                   help="who placed the items: a previous ranker (default; position correlates with preference) "
                        "or independent placement (the original generator)")
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
    from denoisrec.trainer.bench.cli import add_bench_commands
    from denoisrec.trainer.data.convert_cli import add_convert_commands

    add_convert_commands(sub)
    add_bench_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["launch"]:  # torchx's and the component's options follow, unparsed here
        from denoisrec.launch.torchx_cli import main as launch_main

        return launch_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"denoisrec {args.command}: error: {e}", file=sys.stderr)
        _record_for_torchelastic(e)
        return 2


def _record_for_torchelastic(e: BaseException) -> None:
    """Under torchrun/torchx, write ``e`` to this worker's error file: the agent's failure summary
    ("Root Cause") then shows the message instead of only an exit code."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(e)


if __name__ == "__main__":
    sys.exit(main())
