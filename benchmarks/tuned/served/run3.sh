#!/bin/bash
# tce, observation_ids, observation_ids_trusted (id MFs + trusted rows, f without the context) beside the others.
cd /work/main
P="form=examination tower_warmup=25% rates_lr_scale=50"
for F in examination shifted clickbait_context; do for S in 0 1 2; do
  D=/work/data-q/$F-s$S
  O=/work/level/tce-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser tce --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/obs_ids-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser observation_ids -p $P --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/obs_ids_trusted-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser observation_ids -p $P trusted_weight=10 --epochs 1 --out $O > $O.log 2>&1
done; done
echo done
