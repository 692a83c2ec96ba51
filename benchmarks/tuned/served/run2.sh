#!/bin/bash
# BCE, Clean and observation_context beside the level runs, for the reference-context scoring.
cd /work/main
for F in examination shifted clickbait_context; do for S in 0 1 2; do
  D=/work/data-q/$F-s$S
  O=/work/level/bce-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser bce --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/clean-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser bce --set data.train_label=clean_label --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/obs_ctx-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser observation -p form=examination tower_warmup=25% rates_lr_scale=50 --set model.context=features --epochs 1 --out $O > $O.log 2>&1
done; done
echo done
