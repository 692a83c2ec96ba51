"""``denoisrec bench ingest --quick``: a smoke run (numbers are printed, never asserted against targets)."""

import json
from pathlib import Path

from denoisrec.trainer.cli import main


def test_quick_bench_writes_numbers_and_environment(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench"
    assert main(["bench", "ingest", "--quick", "--repeats", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "ingest.json").read_text())
    assert r["repeats"] == 2 and r["batch_size"] == 512  # an explicit flag wins over --quick; the rest is quick's
    assert "raw: dataset" in (out / "ingest.md").read_text() and (out / "ingest.png").stat().st_size > 10_000
    # Each scan and ingest reads a whole epoch of the tiny train split; training counts full batches of 512.
    assert r["split_rows"] == 6000
    for key in ("raw_scan", "ingest_ordered", "ingest_shuffled"):
        assert r[key]["rows"] == 6000 and r[key]["rows_per_s"] == r[key]["rows"] / r[key]["seconds"], key
    assert all(x["rows"] == 6000 for x in r["raw_scans"].values()), r["raw_scans"]
    t = r["training"]
    assert t["steps"] >= 1 and t["rows"] == 512 * t["steps"] and t["rows_per_s"] == t["rows"] / t["seconds"]
    assert r["ratios"]["ingest_shuffled_vs_raw"] == r["ingest_shuffled"]["rows_per_s"] / r["raw_scan"]["rows_per_s"]
    assert r["ratios"]["ingest_ordered_vs_training"] == (
        r["ingest_ordered"]["rows_per_s"] / r["training"]["rows_per_s"]
    )
    assert r["peak_rss"][0]["rows"] == 6000 and r["peak_rss"][0]["peak_rss_bytes"] > 0
    assert r["environment"]["cpu_cores"] and r["environment"]["versions"]["pyarrow"]
    assert "raw: dataset" in printed and "training (DLRM + BCE" in printed
    assert set(r["raw_scans"]) == {"dataset", "parquet_file", "row_groups"}
    assert r["raw_scan"]["rows_per_s"] == max(x["rows_per_s"] for x in r["raw_scans"].values())
