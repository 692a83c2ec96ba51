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
    for key in ("raw_scan", "ingest_ordered", "ingest_shuffled", "training"):
        assert r[key]["rows"] > 0 and r[key]["rows_per_s"] > 0, key
    assert r["ingest_ordered"]["rows"] == r["split_rows"] == 6000  # a whole epoch of the tiny train split
    assert r["ratios"]["ingest_shuffled_vs_raw"] == r["ingest_shuffled"]["rows_per_s"] / r["raw_scan"]["rows_per_s"]
    assert r["ratios"]["ingest_ordered_vs_training"] == (r["ingest_ordered"]["rows_per_s"]
                                                         / r["training"]["rows_per_s"])
    assert r["peak_rss"][0]["rows"] == 6000 and r["peak_rss"][0]["peak_rss_bytes"] > 0
    assert r["environment"]["cores"] and r["environment"]["pyarrow"]
    assert "raw: dataset" in printed and "training (DLRM + BCE" in printed
    assert set(r["raw_scans"]) == {"dataset", "parquet_file", "row_groups"}
    assert r["raw_scan"]["rows_per_s"] == max(x["rows_per_s"] for x in r["raw_scans"].values())
