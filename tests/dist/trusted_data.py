"""Test fixtures for the trusted signals: add a ``trusted_label`` column to a generated dataset, and a
``valid_random`` split, in place (until ``gen-data`` writes them itself).

The trusted label is the row's clean label on a seeded random subset of rows and null elsewhere; the
``valid_random`` split is a copy of ``test`` (same schema, other rows). Importable by launched ranks.

Example::

    generate(str(root), PRESETS["tiny"], seed=0)
    add_trusted(root, fraction={"valid": 0.4}, random_split=True)
    DataSchema.load(str(root)).trusted_label  # "trusted_label"
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMN = "trusted_label"


def add_trusted(
    root: Path,
    fraction: Optional[Dict[str, float]] = None,
    random_split: bool = True,
    seed: int = 0,
    flip: float = 0.0,
) -> Dict[str, int]:
    """Write ``trusted_label`` into every split of ``root`` (``fraction[split]`` of its rows labelled, the rest
    null; splits not named get none) and name it in ``schema.json``; ``random_split`` copies ``test`` to
    ``valid_random`` first (so it carries the column too). ``flip`` flips that fraction of the trusted labels
    (a trusted label that is not the clean one). Returns the trusted rows per split.
    """
    root = Path(root)
    fraction = {"valid": 0.4} if fraction is None else fraction
    if random_split and not (root / "valid_random").exists():
        shutil.copytree(root / "test", root / "valid_random")
    rng = np.random.default_rng(seed)
    counts: Dict[str, int] = {}
    for split in sorted(p.name for p in root.iterdir() if p.is_dir()):
        frac, n_trusted = fraction.get(split, 0.0), 0
        for f in sorted((root / split).glob("*.parquet")):
            t = pq.read_table(f)
            clean = t.column("clean_label").to_numpy().astype(np.int8)
            keep = rng.random(len(clean)) < frac
            wrong = rng.random(len(clean)) < flip
            value = np.where(wrong, 1 - clean, clean).astype(np.int8)
            col = pa.array(value, type=pa.int8(), mask=~keep)
            if COLUMN in t.column_names:
                t = t.drop_columns([COLUMN])
            rg = pq.ParquetFile(f).metadata.row_group(0).num_rows if pq.ParquetFile(f).metadata.num_row_groups else 1
            pq.write_table(t.append_column(COLUMN, col), f, row_group_size=max(rg, 1))
            n_trusted += int(keep.sum())
        counts[split] = n_trusted
    schema = json.loads((root / "schema.json").read_text())
    schema["trusted_label"] = COLUMN
    (root / "schema.json").write_text(json.dumps(schema, indent=2))
    return counts


def trusted_rows(split_dir: Path) -> Dict[str, np.ndarray]:
    """Every row of a split with its sample id and trusted label (NaN where null), in file order."""
    t = pq.read_table(Path(split_dir), columns=["row_id", COLUMN, "label", "clean_label"])
    return {
        "row_id": t.column("row_id").to_numpy(),
        "trusted": t.column(COLUMN).cast(pa.float32()).to_numpy(zero_copy_only=False),
        "label": t.column("label").to_numpy().astype(np.float32),
    }
