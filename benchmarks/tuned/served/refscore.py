"""Clean-test AUC of each run's exported model with the position as logged, fixed at 0 (the top), and marginalised
(the mean score over the training split's position distribution): the serving case, where the position is not known.
"""

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scipy.special import expit

from denoisrec.models import load_model_file
from denoisrec.trainer.data.block import Where
from denoisrec.trainer.evaluation.metrics import auc
from denoisrec.trainer.serving.predict import Scorer

torch.set_num_threads(1)
out_file = "/work/level/refscore.json"
done = json.load(open(out_file)) if os.path.isfile(out_file) else {}
for run in sorted(glob.glob("/work/level/*-s[0-9]")):
    if os.path.basename(run).count("-") != 2:
        continue
    name = os.path.basename(run)
    if name in done or not os.path.isfile(f"{run}/model.pt"):
        continue
    cand, fs = name.split("-", 1)
    data = f"/work/data-q/{fs}"
    test = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(f"{data}/test/*.parquet"))])
    train_pos = np.concatenate(
        [
            pq.read_table(f, columns=["position"]).column(0).to_numpy()
            for f in sorted(glob.glob(f"{data}/train/*.parquet"))
        ]
    )
    values, counts = np.unique(train_pos, return_counts=True)
    weights = counts / counts.sum()
    sc = Scorer(load_model_file(f"{run}/model.pt", torch.device("cpu")), torch.device("cpu"))
    where = Where(path=f"{data}/test", row_group=0)
    y = test.column("clean_label").to_numpy().astype(np.float64)
    i = test.schema.get_field_index("position")
    typ = test.schema.field(i).type

    def at(v, test=test, i=i, typ=typ, sc=sc, where=where):  # noqa: B008
        t = test.set_column(i, test.schema.field(i), pa.array(np.full(test.num_rows, v), type=typ))
        return sc(t, where)

    logged = sc(test, where)
    p0 = at(0)
    marg = np.zeros(test.num_rows)
    for v, w in zip(values, weights):
        marg += w * expit(at(int(v)).astype(np.float64))
    done[name] = {"logged": auc(y, logged), "position_0": auc(y, p0), "marginal": auc(y, marg)}
    print(name, {k: round(v, 4) for k, v in done[name].items()}, flush=True)
    json.dump(done, open(out_file, "w"), indent=1)
