#!/bin/bash
# one noise family for the served scoring: every candidate but deca_p and observation_ids_context, plus the references.
# usage: run6.sh FAMILY "SEEDS" (ran as: run6.sh clickbait "0 1 2", then mix, random_clickers, context_item)
cd /work/main
P="form=examination tower_warmup=25% rates_lr_scale=50"
F=$1
for S in $2; do
  D=/work/data-q/$F-s$S
  t() { O=/work/level/$1-$F-s$S; shift; [ -f $O/summary.json ] || OMP_NUM_THREADS=1 nice -n 5 .venv/bin/denoisrec train --data $D --epochs 1 --out $O "$@" > $O.log 2>&1; }
  t bce --denoiser bce
  t withheld --denoiser bce --set model.context=withhold
  t cleannc --denoiser bce --set data.train_label=clean_label --set model.context=withhold
  t clean --denoiser bce --set data.train_label=clean_label
  t tce --denoiser tce
  t obs --denoiser observation -p $P
  t obs_ids --denoiser observation_ids -p $P
  t obs_trusted --denoiser observation -p $P trusted_weight=10
  t obs_ids_trusted --denoiser observation_ids -p $P trusted_weight=10
  t obs_ctx --denoiser observation -p $P --set model.context=features
  t ids_ctx_trusted --denoiser observation_ids -p $P trusted_weight=10 --set model.context=features
done
echo done
