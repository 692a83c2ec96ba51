#!/usr/bin/env bash
# The GPU check on a lent, offline GPU machine whose transfers are capped (64 MiB a call): the GPU stack arrives
# as the parts of ../shared/gpu/prepare-wheels.sh, one part per call, gathered in $PARTS (/tmp/gpuparts) on the
# machine; the last call unpacks, installs and runs `launch/gpu_check.sh` with the report under $OUT.
#
#   bash launch/gpu_device.sh manifest        # here, once: .gpuparts/MANIFEST (sha256 of every part and wheel)
#   bash launch/gpu_device.sh stash           # there, calls 1 and 2: copy the carried .gpuparts/ into $PARTS
#   bash launch/gpu_device.sh check           # there, call 3: stash, verify against MANIFEST, install, check
#
# Each call carries one part plus the small files, e.g. (the device tool's `carry`):
#   1: .gpuparts/fbgemm-site.tar.xz.00 .gpuparts/MANIFEST
#   2: .gpuparts/fbgemm-site.tar.xz.01 .gpuparts/MANIFEST
#   3: .gpuparts/fbgemm-site.tar.xz.02 .gpuparts/MANIFEST .gpuparts/wheels
# A part missing on the machine (it was given back between calls) is named in one line before anything is
# unpacked. CHECK_ARGS (default: a budget that fits one call of a 15-minute lease) go to the check.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-/tmp/gpuparts}
OUT=${OUT:-runs/gpu-check}
CHECK_ARGS=${CHECK_ARGS:---tests-timeout 200 --rounds 3 --steps 15 --warmup 3}

stash() {
  mkdir -p "$PARTS"
  [[ -d .gpuparts ]] || { echo "gpu-device: no .gpuparts/ in the checkout (carry one part per call)" >&2; exit 2; }
  cp -r .gpuparts/. "$PARTS"/
  echo "gpu-device: $PARTS holds $(cd "$PARTS" && ls -1 fbgemm-site.tar.xz.* 2>/dev/null | tr '\n' ' ')"
}

case ${1:-} in
  manifest)
    [[ -d .gpuparts ]] || { echo "gpu-device: no .gpuparts/ (run ../shared/gpu/prepare-wheels.sh first)" >&2; exit 2; }
    (cd .gpuparts && find . -type f ! -name MANIFEST | sort | xargs sha256sum > MANIFEST)
    cat .gpuparts/MANIFEST
    ;;
  stash)
    stash
    ;;
  check)
    stash
    [[ -f $PARTS/MANIFEST ]] || { echo "gpu-device: $PARTS/MANIFEST missing (carry .gpuparts/MANIFEST)" >&2; exit 2; }
    if ! (cd "$PARTS" && sha256sum --quiet -c MANIFEST); then
      echo "gpu-device: $PARTS lacks or has damaged parts (above); rerun the stash calls for them" >&2
      exit 2
    fi
    mkdir -p "$OUT"
    set -o pipefail
    WHEELS=$PARTS GPU_SITE=/tmp/gpusite OUT=$OUT ARGS="$CHECK_ARGS" PYTHON=${PYTHON:-python3} \
      bash launch/gpu_check.sh 2>&1 | tee "$OUT/gpu_check.log"
    ;;
  *)
    echo "usage: bash launch/gpu_device.sh manifest|stash|check" >&2
    exit 2
    ;;
esac
