#!/bin/bash
# issue 23: the level with trusted rows in training, 3 seeds x 3 families x 2 candidates (1 epoch, 1 thread).
cd /work/main
for F in examination shifted clickbait_context; do for S in 0 1 2; do
  D=/work/data-q/$F-s$S
  O=/work/level/obs_trusted-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser observation -p form=examination tower_warmup=25% rates_lr_scale=50 trusted_weight=10 --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/ids_ctx_trusted-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser observation_ids -p form=examination tower_warmup=25% rates_lr_scale=50 trusted_weight=10 --set model.context=features --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/obs-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser observation -p form=examination tower_warmup=25% rates_lr_scale=50 --epochs 1 --out $O > $O.log 2>&1
done; done
echo done
