#!/bin/bash
# references for the served scoring: Clean without the context (the top for a model that never reads it) and BCE with the context withheld.
cd /work/main
for S in 0 1 2; do for F in examination shifted clickbait_context; do
  D=/work/data-q/$F-s$S
  O=/work/level/withheld-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser bce --set model.context=withhold --epochs 1 --out $O > $O.log 2>&1
  O=/work/level/cleannc-$F-s$S
  [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --denoiser bce --set data.train_label=clean_label --set model.context=withhold --epochs 1 --out $O > $O.log 2>&1
done; done
echo done
