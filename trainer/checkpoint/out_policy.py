"""What a run may do with an existing ``--out``: continue it, refuse, or (when told) overwrite it.

Decided by rank 0 once the run lock is held and the resume point is known (:func:`prepare_out`):

- **resuming** (``run.resume=auto`` found a checkpoint, or ``run.resume=PATH`` inside this ``--out``):
  continue; nothing is deleted.
- **not resuming, and ``--out`` holds checkpoints** (``run.resume=never``, or a checkpoint of another run
  given as ``run.resume=PATH``): refused with one line, unless ``run.overwrite=true``.
- **not resuming, and ``--out`` holds a finished run** (``summary.json`` or ``model.pt``, e.g. a run without
  checkpoints launched again): refused, unless ``run.overwrite=true``.
- **``--out`` holds only the beginnings of a run that never checkpointed** (``config.yaml``,
  ``metrics.jsonl``: a crash or an elastic restart before the first checkpoint): started over, with a note.

``run.overwrite=true`` deletes the previous run's checkpoints, summaries, model file, metrics and TensorBoard
events before the new run writes anything.

Example::

    note = prepare_out(cfg.run, resume_path, is_main=True, broadcast=lambda x: x)
"""

from __future__ import annotations

import os
import shutil
from typing import Any, List, Optional

from denoisrec.trainer.checkpoint.files import list_steps
from denoisrec.trainer.errors import OutDirError, StorageError

RUN_FILES = ("summary.json", "session.json", "model.pt", "metrics.jsonl", "config.yaml", "plan.json")
FINISHED = ("summary.json", "model.pt")


def check_out_dir(out: str, option: str = "--out") -> None:
    """Before anything is written or trained: ``out`` is (or can be made) a writable directory, and its
    ``checkpoints`` (when present) a directory. One line naming the path and the fix otherwise.

    Args:
        out: the output directory.
        option: how the user named it (``--out``, ``export --out``), for the message.

    Raises:
        OutDirError: ``out`` or ``out/checkpoints`` is a regular file (exit status 2).
        StorageError: ``out`` cannot be created or written (read-only, no permission, a full disk; exit status 1).
    """
    if os.path.lexists(out) and not os.path.isdir(out):
        raise OutDirError(f"{option} {out}: a regular file, not a directory; give a directory, or another {option}")
    ckpt = os.path.join(out, "checkpoints")
    if os.path.lexists(ckpt) and not os.path.isdir(ckpt):
        raise OutDirError(
            f"{ckpt}: a regular file where the run keeps its checkpoints; move it away, or use another {option}"
        )
    probe = os.path.join(out, f".write-test-{os.getpid()}")
    try:
        os.makedirs(out, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StorageError(f"{option} {out}: not writable ({e.strerror or e}); give a writable {option}") from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def _contents(out: str) -> List[str]:
    root = os.path.join(out, "checkpoints")
    found = [os.path.basename(p) for _, p in list_steps(root)]
    if os.path.isdir(os.path.join(root, "best")):
        found.append("best")
    return found


def decide(run: Any, resume_path: Optional[str]) -> Optional[str]:
    """``None`` to go ahead, ``"overwrite"`` to clear ``--out`` first, ``"restart"`` to start over after a run
    that left nothing to resume; :class:`OutDirError` to refuse. Pure: reads ``--out``, changes nothing.
    """
    out = run.out
    root = os.path.realpath(os.path.join(out, "checkpoints"))
    if resume_path is not None and os.path.dirname(os.path.realpath(resume_path)) == root:
        return None
    ckpts = _contents(out)
    finished = [f for f in FINISHED if os.path.exists(os.path.join(out, f))]
    if not ckpts and not finished:
        started = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
        return "restart" if started else None
    if getattr(run, "overwrite", False):
        return "overwrite"
    raise OutDirError(f"--out {out} holds {_refusal(run, resume_path, ckpts, finished)}")


def _refusal(run: Any, resume_path: Optional[str], ckpts: List[str], finished: List[str]) -> str:
    """What ``--out`` holds, why this launch would not continue it, and exactly what would."""
    fresh = "use another --out, or --set run.overwrite=true to delete it and start fresh"
    if ckpts:
        what = f"checkpoints ({', '.join(ckpts[-3:])})"
        if resume_path is not None:
            why, go_on = "resuming from another directory", "drop --resume (run.resume=auto) to continue it from them"
        elif run.resume == "auto":  # only a best-model checkpoint: nothing to continue from
            return f"{what} but no step to continue from and a run that would start over; {fresh}"
        else:
            why, go_on = f"run.resume={run.resume}", "--resume auto (run.resume=auto) to continue it"
        return f"{what} and this launch would not continue it ({why}); {go_on}; or {fresh}"
    what = f"a finished run ({', '.join(finished)})"
    return (
        f"{what} and no checkpoint to continue it from (a run keeps them with --set run.checkpoint_every=N), "
        f"so this launch would start over; {fresh}"
    )


def clear(out: str) -> None:
    """Delete a previous run's outputs from ``out`` (what ``run.overwrite=true`` does)."""
    shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
    shutil.rmtree(os.path.join(out, "tb"), ignore_errors=True)
    for f in RUN_FILES:
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))


def prepare_out(run: Any, resume_path: Optional[str], is_main: bool, broadcast: Any) -> Optional[str]:
    """Apply the policy on rank 0 (every rank raises the same error); returns a note to print, or ``None``."""
    error, note = None, None
    if is_main:
        try:
            action = decide(run, resume_path)
            if action == "overwrite":
                clear(run.out)
                note = f"run.overwrite=true: deleted the previous run's outputs in {run.out}"
            elif action == "restart":
                note = f"{run.out}: holds an unfinished run without checkpoints; starting over"
        except OutDirError as e:
            error = str(e)
    error, note = broadcast((error, note))
    if error:
        raise OutDirError(error)
    return note
