"""Per run: the trusted valid rows' labels and logits, logged and marginalised over the train position distribution
(the selection a tune with eval.marginalise=[position] makes), saved as npz for the choice.
"""

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from scipy.special import expit, logit

from denoisrec.models import load_model_file
from denoisrec.trainer.data.block import Where
from denoisrec.trainer.serving.predict import Scorer

torch.set_num_threads(1)
os.makedirs("/work/level/valid", exist_ok=True)
cache = {}
for run in sorted(glob.glob("/work/level/*-s[0-9]")):
    name = os.path.basename(run)
    out = f"/work/level/valid/{name}.npz"
    if name.count("-") != 2 or os.path.isfile(out) or not os.path.isfile(f"{run}/model.pt"):
        continue
    cand, fs = name.split("-", 1)
    data = f"/work/data-q/{fs}"
    if fs not in cache:
        v = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(f"{data}/valid/*.parquet"))])
        v = v.filter(pc.is_valid(v.column("trusted_label")))
        pos = np.concatenate(
            [
                pq.read_table(f, columns=["position"]).column(0).to_numpy()
                for f in sorted(glob.glob(f"{data}/train/*.parquet"))
            ]
        )
        vals, cnt = np.unique(pos, return_counts=True)
        cache = {fs: (v, vals, cnt / cnt.sum())}
    v, vals, w = cache[fs]
    sc = Scorer(load_model_file(f"{run}/model.pt", torch.device("cpu")), torch.device("cpu"))
    where = Where(path=f"{data}/valid", row_group=0)
    i = v.schema.get_field_index("position")
    typ = v.schema.field(i).type
    logged = sc(v, where)
    mean = np.zeros(v.num_rows)
    for val, wt in zip(vals, w):
        t = v.set_column(i, v.schema.field(i), pa.array(np.full(v.num_rows, val), type=typ))
        mean += wt * expit(sc(t, where).astype(np.float64))
    np.savez(
        out,
        labels=v.column("trusted_label").to_numpy().astype(np.float64),
        logged=logged,
        marginal=logit(np.clip(mean, 1e-7, 1 - 1e-7)),
    )
    print(name, flush=True)
