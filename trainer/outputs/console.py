"""What a run tells the user on the console, in a few lines: the denoiser and sharding in brief, and at the end
the clean-AUC curve, where ``curves.png`` is, how many third-party warnings were filed, and the output folder
(logged as ``message`` lines through a :class:`~denoisrec.trainer.outputs.loggers.MetricLogger`).

Example::

    denoiser_brief(TruncatedBCE(eps_max=0.1, num_gradual=98))  # 'tce(eps_max=0.1, num_gradual=98)'
    plan_brief({"t_a": {"sharding_type": "table_wise"}, "t_b": {"sharding_type": "data_parallel"}})
    # 'sharding: 1 table_wise, 1 data_parallel (per table: plan.json)'
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, Mapping, Optional

from denoisrec.denoisers.base import Denoiser
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.outputs.curves import auc_line, read_series, write_curves
from denoisrec.trainer.outputs.loggers import MESSAGE, ConsoleLogger, MetricLogger


def denoiser_brief(d: Denoiser) -> str:
    """``name(option=value, ...)``: the hyperparameters, never the module tree (DeCA holds sub-modules)."""
    hp = {k: v for k, v in d.hparams().items() if v is not None}
    return f"{d.name or type(d).__name__}({', '.join(f'{k}={v}' for k, v in hp.items())})"


def plan_brief(plan_info: Mapping[str, Mapping[str, Any]]) -> str:
    counts = Counter(str(p.get("sharding_type")) for p in plan_info.values())
    return f"sharding: {', '.join(f'{n} {t}' for t, n in counts.most_common())} (per table: plan.json)"


def resolve_eval_every(every: Any, with_ground_truth: bool) -> Any:
    """``auto``: every epoch when the data has ground truth (to show the clean-AUC curve), else at the end."""
    if every == "auto":
        return "epoch" if with_ground_truth else 0
    return every


# Past these, the model's scores do not read as click probabilities (NE > 1: worse than the base rate).
ECE_LIMIT, NE_LIMIT = 0.05, 1.0


def calibration_note(summary: Mapping[str, Any], out: str) -> Optional[str]:
    """One line when the exported model's scores are uncalibrated for observed clicks (validation ECE or NE past
    :data:`ECE_LIMIT` / :data:`NE_LIMIT`) and what to run; ``None`` when they are calibrated or not measured.

    Example::

        calibration_note({"metrics": {"valid": {"ece": 0.155, "ne": 1.12}}}, "runs/x")
        # 'scores: uncalibrated for observed clicks (valid ECE 0.155, NE 1.12); ... --calibrate platt'
    """
    valid = (summary.get("metrics") or {}).get("valid") or {}
    ece, ne = valid.get("ece"), valid.get("ne")
    if ece is None or ne is None or (ece <= ECE_LIMIT and ne <= NE_LIMIT):
        return None
    return (
        f"scores: uncalibrated for observed clicks (valid ECE {ece:.3f}, NE {ne:.2f}); for served probabilities "
        f"run: denoisrec export {out} --calibrate platt"
    )


def finish_run(cfg: Config, summary: Dict[str, Any], quiet: Any, console: Optional[MetricLogger] = None) -> None:
    """Rank 0: write ``curves.png`` (``run.curves``) and log the closing lines to ``console`` (the run's
    :class:`~denoisrec.trainer.outputs.loggers.MetricLogger` for text, kind ``message``; by default a
    :class:`~denoisrec.trainer.outputs.loggers.ConsoleLogger`: stdout).
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return
    out = cfg.run.out
    lines = []
    if "metrics" in summary and cfg.run.curves:
        series = read_series(out, summary.get("steps_per_epoch"))
        lines += [auc_line(series)] if auc_line(series) else []  # '' without evaluations: no line
        path = write_curves(
            [series], os.path.join(out, "curves.png"), title=f"{cfg.model.name} + {series.name} ({out})"
        )
        lines.append(f"curves: {path}  (TensorBoard: tensorboard --logdir {os.path.join(out, 'tb')})")
    lines.append(quiet.summary(int(summary.get("world_size") or os.environ.get("WORLD_SIZE", "1"))))
    note = calibration_note(summary, out) if getattr(cfg.run, "export", False) else None
    lines += [note] if note else []
    lines.append(f"output folder: {out}")
    sink = console if console is not None else ConsoleLogger()
    for line in lines:
        sink.log(MESSAGE, line, int(summary.get("steps") or 0), kind=MESSAGE)
