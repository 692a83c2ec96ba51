#!/usr/bin/env bash
# `make gpu-check`: on a machine with a CUDA device, set up (or reuse) the GPU environment, then run the GPU
# tests, the GPU throughput run and write the report (denoisrec.trainer.bench.gpu_check) into $OUT.
# On a machine without one: one line saying so, exit 0, nothing installed or run.
#
#   make gpu-check                          # online: .venv built with GPU=1 (CUDA torch + fbgemm-gpu)
#   make gpu-check WHEELS=/path/to/wheels   # offline: the system python's CUDA torch + wheels from a folder
#   make gpu-check GPU_CHECK_OUT=runs/gpu-check ARGS='--rounds 9'
#
# Offline route (no package index; e.g. Python 3.12 with torch 2.11+cu130 preinstalled): $WHEELS holds the
# packages that match that torch, in either form:
#   - ../shared/gpu/prepare-wheels.sh's output (.gpuparts/): fbgemm-site.tar.xz.NN, the unpacked fbgemm-gpu 1.6.0
#     cu130 wheel as a tar through xz, split into parts of at most 55 MB (unpacked here with Python's own
#     lzma/tarfile, no pip), and wheels/ (or *.whl beside the parts) with torchrec 1.6.1, tensordict, torchx;
#   - wheels: the fbgemm-gpu wheel whole or as the parts fbgemm.tar.NN (reassembled here), and the others.
# Every wheel goes in with `pip install --no-index --no-deps --target $GPU_SITE`, denoisrec is linked into
# $GPU_SITE, and $PYTHON runs with PYTHONPATH=$GPU_SITE. On the lent GPU machine the parts arrive one per
# device call (launch/gpu_device.sh). Other modules the check imports must
# already be there (numpy, pyarrow, scipy, pyyaml, fsspec, torchmetrics, tqdm, pyre-extensions, pytest, ...):
# a missing one is named, with its pip name, before anything runs. A later `make gpu-check` without WHEELS
# reuses $GPU_SITE.
#
# Variables: WHEELS, GPU_SITE (.gpusite), OUT (runs/gpu-check), ARGS (extra gpu_check options), PYTHON
# (python3; the offline route's interpreter), VENV (.venv), TORCH_INDEX (online CUDA wheel index),
# GPU_CHECK_DEVICE=cpu (rehearse the route on a CPU machine: --device cpu --quick), GPU_CHECK_SETUP_ONLY=1
# (stop after the set-up and the import check).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
GPU_SITE=${GPU_SITE:-.gpusite}
OUT=${OUT:-runs/gpu-check}
ARGS=${ARGS:-}
WHEELS=${WHEELS:-}
DEVICE=${GPU_CHECK_DEVICE:-auto}
[[ $GPU_SITE == /* ]] || GPU_SITE=$root/$GPU_SITE

# 1. A CUDA device? Asked of the driver, before any Python package is installed.
if [[ $DEVICE == auto ]]; then
  if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; } \
      && ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    echo "gpu-check: no CUDA device on this machine (no nvidia-smi GPU, no /dev/nvidia*); nothing to check"
    exit 0
  fi
  DEVICE=cuda
fi
check_args=(--device "$DEVICE" --out "$OUT")
[[ $DEVICE == cpu ]] && check_args+=(--quick)

# 2. The environment: offline (a folder of wheels, or a site installed from one before) or online (.venv).
modules="torch fbgemm_gpu torchrec tensordict numpy pyarrow scipy yaml fsspec torchmetrics tqdm pyre_extensions typing_inspect pytest"
pipname() { case $1 in yaml) echo pyyaml;; pyre_extensions) echo pyre-extensions;; typing_inspect) echo typing-inspect;;
            fbgemm_gpu) echo fbgemm-gpu;; *) echo "$1";; esac; }

offline_setup() {
  local wheels tmp stamp
  wheels=$(cd "$WHEELS" && pwd) || { echo "gpu-check: WHEELS=$WHEELS: no such folder" >&2; exit 2; }
  stamp=$(cd "$wheels" && ls -1R | sort | md5sum | cut -d' ' -f1)
  if [[ -f $GPU_SITE/.installed && $(cat "$GPU_SITE/.installed") == "$stamp" ]]; then
    echo "gpu-check: reusing $GPU_SITE (installed from $wheels)"; return
  fi
  tmp=$(mktemp -d)
  cp "$wheels"/*.whl "$tmp"/ 2>/dev/null || true
  cp "$wheels"/wheels/*.whl "$tmp"/ 2>/dev/null || true
  if compgen -G "$wheels/fbgemm.tar.*" >/dev/null; then  # the split fbgemm-gpu wheel: cat parts | tar xf -
    cat "$wheels"/fbgemm.tar.* | tar xf - -C "$tmp"
  fi
  local xzparts=0
  compgen -G "$wheels/fbgemm-site.tar.xz.*" >/dev/null && xzparts=1
  compgen -G "$tmp/*.whl" >/dev/null || [[ $xzparts == 1 ]] \
    || { echo "gpu-check: WHEELS=$wheels holds no *.whl, no fbgemm.tar.* and no fbgemm-site.tar.xz.* parts" >&2; exit 2; }
  rm -rf "$GPU_SITE"; mkdir -p "$GPU_SITE/denoisrec"
  if [[ $xzparts == 1 ]]; then  # an unpacked site (prepare-wheels.sh): its parts in order, one xz stream
    echo "gpu-check: unpacking $(cd "$wheels" && ls fbgemm-site.tar.xz.* | tr '\n' ' ')into $GPU_SITE (offline)"
    cat "$wheels"/fbgemm-site.tar.xz.* | "$PYTHON" -c "
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz') as t:
    t.extractall(sys.argv[1], filter='data')" "$GPU_SITE" \
      || { echo "gpu-check: $wheels/fbgemm-site.tar.xz.*: not one whole xz tar (a part missing or cut short?)" >&2; exit 1; }
  fi
  if compgen -G "$tmp/*.whl" >/dev/null; then
    echo "gpu-check: installing $(cd "$tmp" && ls *.whl | tr '\n' ' ')into $GPU_SITE (offline)"
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --target "$GPU_SITE" "$tmp"/*.whl
  fi
  for d in trainer models denoisers launch; do ln -s "$root/$d" "$GPU_SITE/denoisrec/$d"; done
  rm -rf "$tmp"
  echo "$stamp" > "$GPU_SITE/.installed"
}

if [[ -n $WHEELS || -f $GPU_SITE/.installed ]]; then
  if [[ -n $WHEELS ]]; then offline_setup; else echo "gpu-check: reusing $GPU_SITE"; fi
  export PYTHONPATH="$GPU_SITE${PYTHONPATH:+:$PYTHONPATH}"
  py=$PYTHON
else
  echo "gpu-check: setting up $VENV with GPU=1 (online; use WHEELS=DIR without a package index)"
  make --no-print-directory venv GPU=1 VENV="$VENV" ${TORCH_INDEX:+TORCH_INDEX=$TORCH_INDEX}
  py=$VENV/bin/python
fi

# 3. Everything the check imports is there (named with its pip name if not), then the check itself.
absent=$("$py" -c "
import importlib.util as u
def there(name):
    try:
        return u.find_spec(name) is not None
    except ImportError:
        return False
print(' '.join(n for n in '$modules denoisrec.trainer'.split() if not there(n)))")
missing=""
for m in $absent; do missing="$missing $(pipname "$m")"; done
if [[ -n $missing ]]; then
  echo "gpu-check: missing for $py:$missing (add their wheels to WHEELS, or use the online route)" >&2
  exit 2
fi
if [[ ${GPU_CHECK_SETUP_ONLY:-0} == 1 ]]; then echo "gpu-check: environment ready ($py)"; exit 0; fi
# shellcheck disable=SC2086
exec "$py" -m denoisrec.trainer.bench.gpu_check "${check_args[@]}" $ARGS
