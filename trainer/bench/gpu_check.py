"""``denoisrec bench gpu_check``: does the GPU path work here, and how fast is it?

What ``make gpu-check`` runs once the GPU environment exists.

1. **Tests**: ``pytest -m gpu`` (``tests/trainer/test_gpu.py``: the sharded model on ``cuda:0`` for every sharding
   type the planner offers, ``TrainPipelineSparseDist`` against the plain step, checkpoint save/resume,
   every denoiser's and the trainer's step under the host-sync guard), in a subprocess with a time limit.
2. **Throughput**: :mod:`denoisrec.trainer.bench.gpu_throughput` — DLRM on product-shape data, fp32 and
   bf16, plain TorchRec, BCE and every denoiser in one interleaved run.
3. **Report**: ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``: GPU name, driver, versions, the tests'
   outcome, samples/s and ratios against their targets. The exit status is 1 when a test failed or the
   throughput run crashed (the report is written either way); a missed throughput target is reported, not
   an error.

Without a CUDA device (and without ``--device cpu``) it prints one line and exits 0. ``--device cpu
--quick`` runs the same path on tiny data (a smoke test of the report; the GPU tests are then skipped).

Example::

    denoisrec bench gpu_check --out runs/gpu-check
    denoisrec bench gpu_check --device cpu --quick --tests tests/trainer/test_gpu.py --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

from denoisrec.trainer.bench import gpu_throughput

NO_CUDA = "gpu-check: no CUDA device on this machine; nothing to check (the GPU tests are skipped in `make test`)"
ROOT = Path(__file__).resolve().parents[2]  # the source tree (trainer/bench/ → root), where tests/ lives


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/gpu-check", help="report directory (gpu_check.{json,md,png})")
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cuda", "cpu"),
        help="auto: cuda:0 if present, else say so and stop; cpu: rehearse the path on CPU",
    )
    p.add_argument("--quick", action="store_true", help="tiny data, a few steps: a smoke test of the report path")
    p.add_argument(
        "--tests", default="-m gpu tests", help="pytest arguments of the test stage (run from the source tree)"
    )
    p.add_argument("--skip-tests", action="store_true", help="leave out the test stage")
    p.add_argument("--tests-timeout", type=int, default=420, help="seconds for the test stage")
    gpu_throughput.add_arguments(p)


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def versions() -> Dict[str, Any]:
    """GPU, driver and library versions (the report's header)."""
    from importlib import metadata

    import torch

    def version(pkg: str) -> Optional[str]:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    out: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "torchrec": version("torchrec"),
        "fbgemm_gpu": version("fbgemm-gpu") or version("fbgemm-gpu-cpu"),
        "tensordict": version("tensordict"),
        "torchx": version("torchx"),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if torch.cuda.is_available()
        else None,
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        out["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        out["driver"] = None
    return out


def run_tests(a: argparse.Namespace) -> Dict[str, Any]:
    """The test stage: pytest in a subprocess; counts from its JUnit XML, the log beside the report."""
    xml, log = os.path.join(a.out, "gpu_tests.xml"), os.path.join(a.out, "gpu_tests.log")
    # A test module that cannot be imported here is reported as an error; it does not stop the GPU tests.
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={os.path.abspath(xml)}",
    ]
    cmd += a.tests.split()
    t0 = time.time()
    try:
        proc = subprocess.run(
            cmd,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=a.tests_timeout,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:  # its output is bytes even with text=True (subprocess docs)
        caught = "".join(o.decode(errors="replace") if isinstance(o, bytes) else o for o in (e.stdout, e.stderr) if o)
        rc, output = None, f"{caught}\ngpu-check: tests stopped after {a.tests_timeout}s"
    with open(log, "w") as f:
        f.write(output)
    res: Dict[str, Any] = {
        "command": " ".join(cmd),
        "returncode": rc,
        "seconds": round(time.time() - t0, 1),
        "log": log,
        "tests": [],
    }
    if os.path.exists(xml):
        for case in ET.parse(xml).getroot().iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            detail = next((c.get("message", "") for c in case if c.tag in ("failure", "error", "skipped")), "")
            res["tests"].append(
                {
                    "name": case.get("name"),
                    "outcome": kind,
                    "seconds": float(case.get("time", 0)),
                    "message": (detail or "")[:300],
                }
            )
    counts: Dict[str, int] = {}
    for t in res["tests"]:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    res["counts"] = counts
    res["ok"] = rc in (0, 5) and not counts.get("failure") and not counts.get("error")  # 5: none collected
    return res


def markdown(report: Dict[str, Any]) -> str:
    from denoisrec.trainer.bench.report import markdown_table

    v, t = report["versions"], report.get("tests")
    lines = [
        f"## denoisrec gpu-check ({report['time_utc']})",
        "",
        f"`{report['command']}`",
        "",
        f"GPU {v.get('gpu') or 'none'} ({v.get('gpu_memory_gib')} GiB, driver {v.get('driver')}); "
        f"Python {v['python']}, torch {v['torch']} (CUDA {v.get('cuda_runtime')}, NCCL {v.get('nccl')}), "
        f"torchrec {v.get('torchrec')}, fbgemm-gpu {v.get('fbgemm_gpu')}, tensordict {v.get('tensordict')}; "
        f"whole check {report['seconds']:.0f} s.",
        "",
    ]
    if t is None:
        lines.append("Tests: skipped (--skip-tests).")
    else:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(t["counts"].items())) or "none collected"
        lines.append(
            f"Tests (`{t['command'].split(' -m pytest ')[-1]}`): **{'ok' if t['ok'] else 'FAILED'}** — "
            f"{counts}, {t['seconds']:.0f} s; log `{t['log']}`."
        )
        bad = [x for x in t["tests"] if x["outcome"] in ("failure", "error")]
        lines += [f"- {x['outcome']}: `{x['name']}`: {x['message']}" for x in bad]
    tp = report.get("throughput")
    if tp:
        i = tp["info"]
        lines += [
            "",
            f"Throughput on {i['device_name']}: DLRM, `{i['data']}` ({i['tables']} tables, width "
            f"{i['embedding_dim']}), batch {i['batch_size']:,}, pipeline {'on' if i['pipelined'] else 'off'}; "
            f"{i['rounds']} interleaved rounds × {i['steps']} steps after {i['warmup']} warm-up; "
            f"ratio = median over rounds of the per-round ratio to the row's baseline.",
            "",
        ]
        cols = [
            ("precision", "precision", "{}"),
            ("method", "method", "{}"),
            ("samples/s (median)", "samples_per_s", "{:,.0f}"),
            ("p25–p75", lambda r: f"{r['samples_per_s_p25']:,.0f}–{r['samples_per_s_p75']:,.0f}", "{}"),
            ("× baseline", "ratio", "{:.3f}"),
            ("versus", "versus", "{}"),
            ("target", "target", "≥{:.2f}"),
            (
                "meets",
                lambda r: None if r["meets_target"] is None else ("yes" if r["meets_target"] else "**no**"),
                "{}",
            ),
        ]
        lines.append(markdown_table(tp["rows"], cols))
    if report.get("notes"):
        lines += [""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def run(a: argparse.Namespace) -> int:
    if a.device == "auto":
        if not cuda_present():
            print(NO_CUDA)
            return 0
        a.device = "cuda"
    if a.device == "cuda" and not cuda_present():
        raise RuntimeError(
            "gpu-check --device cuda: torch sees no CUDA device (torch "
            f"{__import__('torch').__version__}); is this the CUDA build?"
        )
    if a.quick:
        gpu_throughput.apply_quick(a)
    else:
        a.preset = "product"
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    import datetime as _dt

    report: Dict[str, Any] = {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "device": a.device,
        "quick": a.quick,
        "versions": versions(),
        "notes": [],
    }
    if not a.skip_tests:
        print(f"gpu-check: tests ({a.tests}) ...", flush=True)
        report["tests"] = run_tests(a)
        print(
            f"gpu-check: tests {'ok' if report['tests']['ok'] else 'FAILED'} {report['tests']['counts']} "
            f"in {report['tests']['seconds']:.0f}s",
            flush=True,
        )
    else:
        report["tests"] = None
    print("gpu-check: throughput ...", flush=True)
    try:
        result = gpu_throughput.measure(a, a.device)
        report["throughput"] = {
            "info": result["info"],
            "rates": result["rates"],
            "rows": gpu_throughput.ratio_rows(result, grade=not a.quick),
        }
    except Exception as e:  # the report still carries the versions and the tests' outcome
        import traceback

        report["throughput"] = None
        report["throughput_error"] = traceback.format_exc()[-4000:]
        report["notes"].append(
            f"throughput run failed: {type(e).__name__}: {str(e).splitlines()[0][:300]} (traceback in gpu_check.json)"
        )
    if a.quick:
        report["notes"].append("--quick: tiny data and a few steps; a smoke test of the path, not a measurement")
    if a.device == "cpu":
        report["notes"].append("--device cpu: a rehearsal on CPU; no GPU figure")
    missed = [
        f"{r['precision']} {r['method']} {r['ratio']:.3f}× {r['versus']} (target ≥{r['target']:.2f})"
        for r in (report["throughput"] or {}).get("rows", [])
        if r["meets_target"] is False
    ]
    if missed:
        report["notes"].append("below target: " + "; ".join(missed))
    report["seconds"] = time.time() - t0
    from denoisrec.trainer.bench.report import jsonable

    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(jsonable(report), f, indent=2, default=str)
    md = markdown(report)
    with open(os.path.join(a.out, "gpu_check.md"), "w") as f:
        f.write(md)
    print(md)
    written = [os.path.join(a.out, f"gpu_check.{x}") for x in ("json", "md")]
    rows = (report["throughput"] or {}).get("rows") or []
    if rows:
        from denoisrec.trainer.bench.report import save_plot

        png = os.path.join(a.out, "gpu_check.png")
        if save_plot(png, lambda fig: gpu_throughput.plot(fig, rows)):
            written.append(png)
    print(f"wrote {', '.join(written)}")
    tests_ok = report["tests"] is None or report["tests"]["ok"]
    return 0 if tests_ok and report["throughput"] is not None else 1


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="gpu-check", description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p)
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)  # explicit flags win over --quick
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
