"""A serving process with torch alone: load artefacts, score a Parquet file, save the scores.

Run as ``python serving_client.py OUT.npz DATA.parquet ARTEFACT...``. Importing denoisrec, torchrec or
fbgemm_gpu raises (a meta-path finder), so the artefacts must be self-contained. The client reads the
artefact's own ``serving.json`` for the feature order and builds the documented input: a dense
``[B, n_dense]`` tensor, and per sparse feature the raw ids and ``[B + 1]`` offsets.
"""

import importlib.abc
import json
import sys

BLOCKED = ("denoisrec", "torchrec", "fbgemm_gpu")


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"serving client: import of {name!r} is blocked (the artefact must need torch only)")
        return None


sys.meta_path.insert(0, Block())

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402


def load(path):
    extra = {"serving.json": ""}
    if path.endswith(".pt2"):
        module = torch.export.load(path, extra_files=extra).module()
    else:
        module = torch.jit.load(path, _extra_files=extra)
    return module, json.loads(extra["serving.json"])


def inputs(table, spec):
    dense_cols = spec["inputs"]["dense"]["columns"]
    n = table.num_rows
    dense = torch.from_numpy(
        np.stack([table.column(c).to_numpy().astype(np.float32) for c in dense_cols], axis=1)
        if dense_cols
        else np.zeros((n, 0), np.float32)
    )
    values, offsets = {}, {}
    for f in spec["inputs"]["sparse"]:
        col = table.column(f["name"]).combine_chunks()
        if f["multi_hot"]:
            values[f["name"]] = torch.from_numpy(col.values.to_numpy().astype(np.int64))
            offsets[f["name"]] = torch.from_numpy(col.offsets.to_numpy().astype(np.int64))
        else:
            values[f["name"]] = torch.from_numpy(col.to_numpy().astype(np.int64))
            offsets[f["name"]] = torch.arange(n + 1, dtype=torch.int64)
    return dense, values, offsets


def main(out, data, *artefacts):
    table = pq.read_table(data)
    result = {}
    for i, path in enumerate(artefacts):
        module, spec = load(path)
        with torch.no_grad():
            o = module(*inputs(table, spec))
        for k, v in o.items():
            result[f"{i}/{k}"] = v.numpy()
    assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    for name in BLOCKED:  # and the block is real
        try:
            __import__(name)
            raise AssertionError(f"{name} imported despite the block")
        except ImportError as e:
            assert "is blocked" in str(e)
    np.savez(out, **result)


if __name__ == "__main__":
    main(*sys.argv[1:])
