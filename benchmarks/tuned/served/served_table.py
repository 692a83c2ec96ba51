"""Scored as served: clean-test AUC with the position marginalised over train, and the tune choice made on the
trusted valid rows scored the same way, per family over 3 seeds (gap closure to Clean without the context,
the best clean-label model a served ranker can use).
"""

import json
import os
import statistics as st
import sys

import numpy as np

from denoisrec.trainer.bench.tuned import _cand
from denoisrec.trainer.evaluation.selection_rule import choose

ref = json.load(open("/work/level/refscore.json"))
ORDER = [
    ("bce", "bce"),
    ("withheld", "bce_no_context"),
    ("tce", "tce"),
    ("obs", "observation"),
    ("obs_ctx", "observation_context"),
    ("obs_ids", "observation_ids"),
    ("obs_trusted", "observation_trusted"),
    ("obs_ids_trusted", "observation_ids_trusted"),
    ("ids_ctx_trusted", "observation_ids_context_trusted"),
]
FAMS = ["examination", "shifted", "clickbait_context", "clickbait", "mix", "random_clickers", "context_item"]
out = {"what": __doc__, "families": {}}
lines = []
for fam in FAMS:
    per = {}
    choices = {"served": [], "logged": []}
    for s in range(3):
        runs = [
            (short, name)
            for short, name in ORDER
            if f"{short}-{fam}-s{s}" in ref and os.path.isfile(f"/work/level/valid/{short}-{fam}-s{s}.npz")
        ]
        for short, name in runs + [("clean", "clean"), ("cleannc", "clean_no_context")]:
            r = ref.get(f"{short}-{fam}-s{s}")
            if r:
                per.setdefault(name, []).append(r)
        for mode in ("served", "logged"):
            cands = []
            for short, name in runs:
                z = np.load(f"/work/level/valid/{short}-{fam}-s{s}.npz")
                cands.append(_cand(name, z["labels"], z["marginal" if mode == "served" else "logged"]))
            c = choose(cands)
            chosen = cands[c.chosen].name
            key = "marginal" if mode == "served" else "logged"
            choices[mode].append(
                {
                    "seed": s,
                    "chosen": chosen,
                    "test_clean_auc": ref[f"{dict((n, sh) for sh, n in ORDER)[chosen]}-{fam}-s{s}"]["marginal"],
                    "candidates": [x.name for x in cands],
                }
            )
    fam_out = {}

    def ms(xs):
        return (st.mean(xs), st.stdev(xs) if len(xs) > 1 else 0.0)

    bce_s = [r["marginal"] for r in per["bce"]]
    clean_s = [r["marginal"] for r in per["clean_no_context"]]
    bce_l = [r["logged"] for r in per["bce"]]
    clean_l = [r["logged"] for r in per["clean"]]
    for name, rs in per.items():
        served = [r["marginal"] for r in rs]
        logged = [r["logged"] for r in rs]
        gs = [(a - b) / (c - b) for a, b, c in zip(served, bce_s, clean_s)]
        gl = [(a - b) / (c - b) for a, b, c in zip(logged, bce_l, clean_l)]
        fam_out[name] = {"served": served, "logged": logged, "gap_served": gs, "gap_logged": gl}
    for mode in ("served", "logged"):
        aucs = [c["test_clean_auc"] for c in choices[mode]]
        gs = [(a - b) / (c - b) for a, b, c in zip(aucs, bce_s, clean_s)]
        fam_out[f"tuned ({mode} selection)"] = {
            "served": aucs,
            "gap_served": gs,
            "chosen": [c["chosen"] for c in choices[mode]],
        }
    out["families"][fam] = fam_out
    lines.append(f"\n{fam}")
    lines.append(
        "| row | logged: clean-test AUC | gap | as served: clean-test AUC | gap | − BCE, paired "
        "| − bce_no_context, paired |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for name, v in fam_out.items():
        m, sd = ms(v["served"])
        paired = [a - b for a, b in zip(v["served"], bce_s)]
        pm, psd = ms(paired)
        nc = [r["marginal"] for r in per["bce_no_context"]]
        qm, qsd = ms([a - b for a, b in zip(v["served"], nc)])
        if "logged" in v:
            lm, lsd = ms(v["logged"])
            lg = st.mean(v["gap_logged"])
            left = f"{lm:.4f} ± {lsd:.4f} | {lg:+.2f}"
        else:
            left = "– | –"
        extra = f" ({', '.join(v['chosen'])})" if "chosen" in v else ""
        lines.append(
            f"| {name}{extra} | {left} | {m:.4f} ± {sd:.4f} | {st.mean(v['gap_served']):+.2f} "
            f"| {pm:+.4f} ± {psd:.4f} | {qm:+.4f} ± {qsd:.4f} |"
        )
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "/work/level/served.json", "w"), indent=1)
print("\n".join(lines))
