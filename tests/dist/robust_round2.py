"""Whole runs of round two (issue 26), one process, world size 1, every training in a forked child.

Run as ``python tests/dist/robust_round2.py --data TINY --root DIR``; what each scenario found goes to
``<root>/round2.json`` and ``tests/trainer/test_robust_round2_runs.py`` asserts on it. The helpers (``config``,
``child``, ``brief``) are those of ``tests/dist/robust_runs.py``.

- ``skip``: a dataset with a burst of overflowing rows under ``run.nonfinite=skip``, a log line and a
  checkpoint after every step (so windows of only skipped steps and checkpoints at skipped steps), once
  uninterrupted and once stopped after 7 steps and resumed: both end, count the same skipped steps and end
  with the same model.
- ``identity``: a finished run resumed on another dataset of the same schema, with another ``eps_max``, with
  a changed digit in its newest ``meta.json``.
- ``plan``: a ``table_wise`` run resumed on the automatic plan with another batch size (re-planned from the
  checkpoint's per-table plan), and one resumed with another ``optim.sparse``.
- ``disk``: a run whose first checkpoint does not fit (a file-size limit): one line, nothing partial; the
  relaunch trains.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import sys
from typing import Any, Dict

from robust_runs import brief, child, config, intact

from denoisrec.trainer.train import train


def burst(data: str, root: str, rows=(100, 600, 1100, 1600, 2100)) -> str:
    """A copy of ``data`` whose train file 1 has rows with dense values of 3e38 (finite, overflowing)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = f"{root}/burst"
    shutil.copytree(data, out)
    f = f"{out}/train/part-00001.parquet"
    t = pq.read_table(f)
    for c in json.load(open(f"{out}/schema.json"))["dense"]:
        v = t.column(c).to_numpy().copy()
        v[list(rows)] = np.float32(3e38)
        t = t.set_column(t.schema.get_field_index(c), c, pa.array(v, type=pa.float32()))
    pq.write_table(t, f, row_group_size=500)
    return out


def skip_scenario(data: str, root: str) -> Dict[str, Any]:
    bad = burst(data, root)
    kw: Dict[str, Any] = {"nonfinite": "skip", "log_every": 1, "checkpoint_every": 1}
    ref = child(lambda: brief(train(config(bad, f"{root}/skip-ref", **kw))), f"{root}/skip-ref.log")
    out = f"{root}/skip"
    first = child(lambda: brief(train(config(bad, out, stop_after_steps=7, **kw))), f"{root}/skip1.log")
    second = child(lambda: brief(train(config(bad, out, **kw))), f"{root}/skip2.log")
    records = [json.loads(x) for x in open(f"{out}/metrics.jsonl")]
    return {
        "ref": ref.get("result"),
        "ref_error": ref.get("error"),
        "ref_output": ref["output"][-2000:],
        "first": first.get("result"),
        "first_error": first.get("error"),
        "second": second.get("result"),
        "second_error": second.get("error"),
        "skipped_records": [r for r in records if r.get("kind") == "train" and r.get("skipped_steps")],
        "after": intact(out),
    }


def other_data(root: str) -> str:
    from denoisrec.trainer.datasets.synthetic import PRESETS, generate

    out = f"{root}/other"
    generate(out, PRESETS["tiny"], seed=1)
    return out


def identity_scenario(data: str, root: str) -> Dict[str, Any]:
    out = f"{root}/id"
    done = child(lambda: brief(train(config(data, out, epochs=1))), f"{root}/id.log")
    other = other_data(root)
    found: Dict[str, Any] = {"done": done.get("result")}
    for name, cfg in [
        ("other_data", lambda: config(other, out)),
        ("other_eps", lambda: config(data, out, denoiser__params={"eps_max": 0.1, "num_gradual": 10})),
    ]:
        r = child(lambda cfg=cfg: brief(train(cfg())), f"{root}/id-{name}.log")
        found[name] = r.get("error")
    meta_file = f"{out}/checkpoints/step_00000012/meta.json"
    text = open(meta_file).read()
    found["digit_was_there"] = '"step": 12,' in text
    with open(meta_file, "w") as f:
        f.write(text.replace('"step": 12,', '"step": 10,'))  # a changed digit; every key still there
    r = child(lambda: brief(train(config(data, out))), f"{root}/id-digit.log")
    found["digit"] = {"result": r.get("result"), "error": r.get("error"), "output": r["output"][-20000:]}
    return found


def plan_scenario(data: str, root: str) -> Dict[str, Any]:
    out = f"{root}/plan"
    tw = {"sharding__sharding_type": "table_wise"}
    first = child(lambda: brief(train(config(data, out, epochs=1, **tw))), f"{root}/plan1.log")
    shutil.copytree(out, f"{root}/plan-opt", symlinks=True)
    second = child(lambda: brief(train(config(data, out, data__batch_size=256))), f"{root}/plan2.log")
    opt = child(lambda: brief(train(config(data, f"{root}/plan-opt", optim__sparse="sgd", **tw))), f"{root}/po.log")
    plan = json.load(open(f"{out}/plan.json"))
    return {
        "first": first.get("result"),
        "first_error": first.get("error"),
        "second": second.get("result"),
        "second_error": second.get("error"),
        "second_types": sorted({p["sharding_type"] for p in plan.values()}),
        "other_optimizer": opt.get("error"),
    }


def disk_scenario(data: str, root: str) -> Dict[str, Any]:
    out = f"{root}/disk"

    def limited() -> Any:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
        return brief(train(config(data, out)))

    full = child(limited, f"{root}/disk1.log")
    after = intact(out)
    again = child(lambda: brief(train(config(data, out))), f"{root}/disk2.log")
    return {"error": full.get("error"), "after": after, "again": again.get("result"), "again_error": again.get("error")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--root", required=True)
    a = p.parse_args()
    found: Dict[str, Any] = {}
    for name, fn in [
        ("skip", lambda: skip_scenario(a.data, a.root)),
        ("identity", lambda: identity_scenario(a.data, a.root)),
        ("plan", lambda: plan_scenario(a.data, a.root)),
        ("disk", lambda: disk_scenario(a.data, a.root)),
    ]:
        found[name] = fn()
    with open(os.path.join(a.root, "round2.json"), "w") as f:
        json.dump(found, f, indent=1, default=str)
    sys.exit(0)


if __name__ == "__main__":
    main()
