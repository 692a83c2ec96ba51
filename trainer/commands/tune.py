"""``denoisrec tune``: train the candidate methods on a dataset, choose on its trusted signal, write the choice.

The work is :mod:`denoisrec.trainer.tuning` (candidates, budget, runs, table, the written config); the rule
is :mod:`denoisrec.trainer.evaluation.selection_rule`. This module parses, checks the data's trusted signal before any
run, and prints.

Example::

    denoisrec tune --data data/small --budget 4 --out runs/tune
    denoisrec train --config runs/tune/tuned.yaml
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "train the candidate denoisers, choose on the trusted signal, write the choice as a train config"

DESCRIPTION = """\
Trains each candidate (simplest first: bce, tce, observation with form=examination tower_warmup=25%
rates_lr_scale=50, observation_ids and observation_trusted (trusted_weight=10, only when train has trusted
labels) with the same options, deca_p; --candidates picks others, any denoiser name included) with validation
every epoch, scores each run's selected epoch on the data's trusted signal (eval.select_on: the trusted labels
of valid, else the randomised-exposure split valid_random), and chooses the simplest candidate whose AUC is
within the confidence interval (paired DeLong) of the best. Writes the choice as a YAML config that `denoisrec
train --config FILE`, torchx and Slurm take as is, and prints a table of the candidates.

Data without a trusted signal is refused: observed-label validation rewards a model that copies the
label noise, so the choice would be blind; --select-on observed runs anyway, with a warning."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Data, budget, candidates, selection, the base set-up of every run, and where to write."""
    from denoisrec.trainer.config.options import MODEL_OPTIONS, PRESETS
    from denoisrec.trainer.evaluation.selection import SELECT_ON
    from denoisrec.trainer.tuning import DEFAULT_CANDIDATES

    p.add_argument("--data", metavar="DIR", required=True, help="dataset directory (data.path)")
    p.add_argument("--out", metavar="DIR", default="runs/tune", help="where the runs go (default: runs/tune)")
    p.add_argument(
        "--budget",
        metavar="N|MINUTES",
        default=str(len(DEFAULT_CANDIDATES)),
        help=f"candidate runs (default: {len(DEFAULT_CANDIDATES)}, every default candidate) or training time "
        "(30m, 1.5h); the simplest candidates run first",
    )
    p.add_argument(
        "--candidates",
        metavar="LIST",
        help=f"comma-separated candidates (default: {','.join(DEFAULT_CANDIDATES)}); any denoiser name is one, "
        "with its defaults; simpler ones first",
    )
    p.add_argument(
        "--select-on",
        choices=SELECT_ON,
        default="auto",
        help="what to choose on (eval.select_on; default auto: trusted labels, else valid_random, else refuse)",
    )
    p.add_argument("--config", metavar="FILE", help="YAML base config of every run (its denoiser is replaced)")
    p.add_argument("--preset", metavar="NAME", help=f"a training preset for every run: {', '.join(PRESETS)}")
    p.add_argument("--model", metavar="NAME", help=f"{' | '.join(MODEL_OPTIONS)} (model.name; default: dlrm)")
    p.add_argument("--epochs", type=int, default=3, metavar="N", help="epochs per run (default: 3)")
    p.add_argument("--batch-size", type=int, metavar="N", help="rows per rank per step (data.batch_size)")
    p.add_argument("--seed", type=int, metavar="N", help="run.seed of every run (default: 0)")
    p.add_argument("--device", metavar="DEV", help="run.device (default: auto)")
    p.add_argument(
        "--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run"
    )
    p.add_argument(
        "--write",
        metavar="FILE",
        help="the chosen config (default: <out>/tuned.yaml); its runs go to <out>/tuned",
    )


def base_config(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    from denoisrec.trainer.commands.train import config_from_args

    ns = argparse.Namespace(
        config=a.config,
        preset=a.preset,
        data=a.data,
        out=None,
        model=a.model,
        denoiser=None,
        denoiser_param=[],
        batch_size=a.batch_size,
        epochs=a.epochs,
        steps=None,
        seed=a.seed,
        sharding=None,
        device=a.device,
        baseline=None,
        resume=None,
        set=a.set,
    )
    return config_from_args(ns)


def run(a: argparse.Namespace) -> int:
    """Check everything cheap first (options, data, trusted signal, budget), then train, choose, write."""
    from denoisrec.trainer.config.check import check_config
    from denoisrec.trainer.config.options import UsageError
    from denoisrec.trainer.tuning import TUNED_FILE, Budget, min_run_seconds, resolve_candidates

    budget = Budget.parse(a.budget)
    names = resolve_candidates(a.candidates)
    if a.epochs is not None and a.epochs < 1:
        raise UsageError(f"--epochs {a.epochs}: expected at least 1")
    base = check_config(base_config(a))
    if "://" not in a.data and not os.path.isdir(a.data):
        raise FileNotFoundError(2, "no such dataset directory (--data; denoisrec gen-data makes one)", a.data)
    selection, train_rows, train_trusted = selection_of(base, a.select_on)
    from denoisrec.trainer.tuning import offered

    names, left_out = offered(names, train_trusted, bool(base.eval.marginalise), bool(a.candidates))
    for line in left_out:
        print(f"tune: {line}")
    if len(names) < 2:
        raise UsageError(f"--candidates: {len(names)} candidate(s) left to run; give at least two this data can train")
    if budget.minutes is not None:
        floor = min_run_seconds(train_rows, base.run.epochs) / 60.0
        if budget.minutes < floor:
            raise UsageError(
                f"--budget {a.budget}: too small for one run ({train_rows:,} train rows x {base.run.epochs} "
                f"epoch(s) need at least {floor:.1f} min); raise it or give a number of runs"
            )
    write = a.write or os.path.join(a.out, TUNED_FILE)
    from denoisrec.trainer.distributed.env import shutdown
    from denoisrec.trainer.tuning import format_table, tune, write_tuned

    print(
        f"tune {a.data}: {len(names)} candidate(s) ({', '.join(names)}), budget {budget.describe()}, "
        f"{base.run.epochs} epoch(s) each; choosing on {selection.split} ({selection.reason})",
        flush=True,
    )
    try:
        result = tune(base, names, budget, a.out, selection, base.eval.ci_level)
    finally:
        shutdown()
    write_tuned(result, write, os.path.join(a.out, "tuned"))
    print(format_table(result))
    print(f"wrote {write}: denoisrec train --config {write}")
    return 0


def selection_of(base, asked: str):  # type: ignore[no-untyped-def]
    """The resolved selection mode, the train rows and the train rows with a trusted label; refuses data with no
    trusted signal unless asked.
    """
    from denoisrec.trainer.config.options import UsageError
    from denoisrec.trainer.data.reader import ParquetBatchReader
    from denoisrec.trainer.data.schema import RANDOM_SPLIT
    from denoisrec.trainer.data.splits import has_random_split, schema_from_config, split_path
    from denoisrec.trainer.evaluation.selection import count_trusted, resolve_selection

    schema = schema_from_config(base.data)
    readers = {
        s: ParquetBatchReader(split_path(base.data.path, s), schema, 1024, prefetch=0, split=s)
        for s in ("train", "valid")
    }
    if has_random_split(base.data.path):
        readers[RANDOM_SPLIT] = ParquetBatchReader(
            split_path(base.data.path, RANDOM_SPLIT), schema, 1024, prefetch=0, split=RANDOM_SPLIT
        )
    try:
        selection = resolve_selection(asked, readers)
    except UsageError as e:
        raise UsageError(str(e).replace("eval.select_on", "--select-on", 1)) from None
    if selection.mode == "observed":
        if asked == "auto":
            raise UsageError(
                f"{base.data.path}: no trusted signal (no trusted labels in valid, no {RANDOM_SPLIT} split), so "
                "tune will not choose: observed-label validation rewards a model that copies the label noise "
                "(it ranks BCE first where the noise is item-driven; docs/models.md, Selection); add a "
                f"trusted_label column or a {RANDOM_SPLIT} split, or pass --select-on observed to choose anyway"
            )
        print(
            "tune: warning: choosing on observed labels (--select-on observed): a method that fits the label "
            "noise scores higher there, so the choice may favour the wrong method",
            file=sys.stderr,
        )
    return selection, readers["train"].total_rows, count_trusted(readers["train"])
