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
    denoisrec report RUN [RUN ...] [--out FIG.png]   (runs side by side: table + curves)
    denoisrec --version

``python -m denoisrec.trainer`` is ``denoisrec train`` (the form torchrun and torchx start).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, NoReturn, Optional

from denoisrec.trainer.config import Config, apply_overrides, parse_params
from denoisrec.trainer.errors import UsageError


def add_train_args(p: argparse.ArgumentParser) -> None:
    from denoisrec.trainer.options import DEVICES, MODEL_OPTIONS, PRESETS, SHARDING_TYPES

    p.add_argument("--config", metavar="FILE", help="YAML config file: any part of the tree --print-config shows")
    p.add_argument("--preset", metavar="NAME", help=f"the papers' set-ups: {', '.join(PRESETS)} (applied after "
                   "--config, before the other flags)")
    p.add_argument("--data", metavar="DIR", help="dataset directory (data.path; default: data/small)")
    p.add_argument("--out", metavar="DIR", help="run output directory (run.out; default: runs/default)")
    p.add_argument("--model", metavar="NAME", help=f"{' | '.join(MODEL_OPTIONS)} (model.name; default: dlrm)")
    p.add_argument("--denoiser", metavar="NAME", help="the loss layer (denoiser.name; default: bce); names and "
                   "their -p options below")
    p.add_argument("-p", "--denoiser-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="denoiser option(s) (denoiser.params.NAME), repeatable: -p a=1 b=2 or -p a=1 -p b=2")
    p.add_argument("--batch-size", type=int, metavar="N", help="rows per rank per step (data.batch_size; default: "
                   "2048)")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the train split (run.epochs; default: 1)")
    p.add_argument("--steps", type=int, metavar="N", help="step budget (run.max_steps; default: none)")
    p.add_argument("--seed", type=int, metavar="N", help="run.seed (default: 0)")
    p.add_argument("--sharding", metavar="TYPE", help=f"{' | '.join(SHARDING_TYPES)} for every table "
                   "(sharding.sharding_type; default: the planner chooses; row_wise on GPU only)")
    p.add_argument("--device", metavar="DEV", help=f"{' | '.join(DEVICES)} (run.device; default: auto)")
    p.add_argument("--baseline", metavar="RUN", help="run directory whose summary.json is the RealImp baseline "
                   "(run.baseline)")
    p.add_argument("--resume", metavar="WHAT", help="auto (default: <out>/checkpoints/latest if present), never, "
                   "or a checkpoint directory (run.resume)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set optim.lr=3e-4 run.eval_every=100 (repeatable; under torchx "
                        "give them as one list)")
    p.add_argument("--print-config", action="store_true", help="check the options, print the resolved config "
                   "tree (every key, with its value) and exit")


def train_epilog() -> str:
    from denoisrec.trainer.options import DENOISER_OPTIONS, MODEL_OPTIONS, describe

    return ("denoisers and their -p options (default [accepted range]):\n" + describe(DENOISER_OPTIONS) +
            "\n\nmodels and their options (--set model.params.NAME=VALUE):\n" + describe(MODEL_OPTIONS) +
            "\n\nevery config key with its default: denoisrec train --print-config\n"
            "mistakes exit 2 (usage) or 1 (data) with a one-line message naming the option")


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
    from denoisrec.trainer.config_check import check_config

    cfg = check_config(config_from_args(a))  # every value checked before torch is imported
    if a.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
        return 0
    path = cfg.data.path
    if isinstance(path, str) and "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(2, "no such dataset directory (--data / data.path; denoisrec gen-data makes one)",
                                path)
    from denoisrec.trainer.dist import shutdown
    from denoisrec.trainer.train import train

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
    from denoisrec.trainer.datasets.synthetic import describe, generate, preset_by_name, scaled, with_logging

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


DESCRIPTION = """CTR training on TorchRec that learns from noisy implicit feedback.

  make train                                  the recommended set-up on synthetic data, with its curves
  denoisrec train --data DIR --denoiser NAME  train; train --help lists models, denoisers and their options
  denoisrec report RUN [RUN ...]              runs side by side: a table and one figure
  denoisrec COMMAND --help                    a command's options (docs/ has the details)"""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``denoisrec train: error: ... (see --help)``), exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("denoisrec")
    except Exception:  # not installed as a distribution (a bare checkout on PYTHONPATH)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="denoisrec", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"denoisrec {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train and evaluate a model (one process, or under torchrun/torchx)",
                       epilog=train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
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

    from denoisrec.trainer.run_report import add_report_command

    add_convert_commands(sub)
    add_bench_commands(sub)
    add_report_command(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["launch"]:  # torchx's and the component's options follow, unparsed here
        from denoisrec.launch.torchx_cli import main as launch_main

        return launch_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv  # which options were typed (bench: explicit flags win over --quick)
    try:
        return int(args.fn(args))
    except (ValueError, OSError) as e:
        code = exit_status(e) if args.command in ("train", "report") else 2
        # a usage mistake is the same on every rank: rank 0 says it; anything else may be one rank's own
        if not isinstance(e, UsageError) or os.environ.get("RANK", "0") == "0":
            print(f"denoisrec {args.command}: error: {_one_line(e)}", file=sys.stderr)
        _record_for_torchelastic(e)
        return code


def exit_status(e: BaseException) -> int:
    """1 for a problem with the data or files (missing, unreadable, malformed), 2 for a usage mistake.

    (``train`` and ``report``; the other commands still exit 2 on every error they report.)"""
    from denoisrec.trainer.errors import DataError

    if isinstance(e, UsageError):
        return 2
    if isinstance(e, (DataError, OSError)):
        return 1
    return 2


def _one_line(e: BaseException) -> str:
    text = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror or e}"
    return " ".join(text.split())


def _record_for_torchelastic(e: BaseException) -> None:
    """Under torchrun/torchx, write ``e`` to this worker's error file: the agent's failure summary
    ("Root Cause") then shows the message instead of only an exit code."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(e)


if __name__ == "__main__":
    sys.exit(main())
