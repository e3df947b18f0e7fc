#!/usr/bin/env bash
# Side-by-side PatchCore speed: jad vs anomalib 2.7 (CPU, 2 threads, same random WRN50-2 weights).
#
#   experiments/anomalib/compare.sh [WORK_DIR]          # default WORK_DIR=/tmp/jad_cmp
#
# Needs: jad's environment as `python3` (run from anywhere; the repo root is found from this
# file) and anomalib's venv at $ANOMALIB_VENV (default /tmp/anomalib-venv; see README.md for the
# two pip commands that create it). Environment knobs:
#   VARIANTS="small large"   which data sets to run (small: 24 train images per category,
#                            large: $LARGE_TRAIN train images -> N = LARGE_TRAIN*784 patches)
#   LARGE_TRAIN=209          train images of the large variant (MVTec bottle has 209)
#   LARGE_CATEGORIES=disc    categories of the large variant ("all" for weave + disc)
#   THREADS=2                torch threads for anomalib; XLA uses the same cores for jad
#   OFFICIAL_SRC=DIR         if set (a checkout of amazon-science/patchcore-inspection), also
#                            time the official code with run_official_patchcore.py
# Outputs under WORK_DIR: data_*/, wrn50_seed0.pth, wrn50_jad/, anomalib_*.json, jad_*/results.json,
# official_*.json, table_*.md, and the logs *.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${1:-/tmp/jad_cmp}"
VENV="${ANOMALIB_VENV:-/tmp/anomalib-venv}"
PY="${PYTHON:-python3}"
VARIANTS="${VARIANTS:-small large}"
LARGE_TRAIN="${LARGE_TRAIN:-209}"
LARGE_CATEGORIES="${LARGE_CATEGORIES:-disc}"
THREADS="${THREADS:-2}"
RATIO=0.1
# glibc's dynamic mmap threshold lets anomalib's coreset loop (an 18-200 MB temporary per step)
# grow the heap without bound: RSS reached 12-18 GB on the 24-image set and the OOM killer ended
# the run. A fixed threshold keeps it at ~1.7 GB; it changes no result. MALLOC_FIX=0 to disable.
if [[ "${MALLOC_FIX:-1}" == 1 ]]; then PEER_ENV=(MALLOC_MMAP_THRESHOLD_=65536); else PEER_ENV=(); fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "error: anomalib venv $VENV not found; create it as described in $HERE/README.md" >&2
  exit 2
fi
mkdir -p "$WORK"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

stamp() { date '+%H:%M:%S'; }

# (b) identical weights for both tools ------------------------------------------------------------
if [[ ! -f "$WORK/wrn50_seed0.pth" ]]; then
  echo "[$(stamp)] weights -> $WORK/wrn50_seed0.pth"
  "$PY" "$HERE/make_weights.py" --out "$WORK/wrn50_seed0.pth"
fi
if [[ ! -d "$WORK/wrn50_jad" ]]; then
  echo "[$(stamp)] jad.convert -> $WORK/wrn50_jad"
  "$PY" -m jad.convert --src "$WORK/wrn50_seed0.pth" --out "$WORK/wrn50_jad"
fi

for variant in $VARIANTS; do
  data="$WORK/data_$variant"
  cats=all
  gen_args=()
  if [[ "$variant" == large ]]; then
    gen_args=(--n-train "$LARGE_TRAIN")
    cats="$LARGE_CATEGORIES"
    [[ "$cats" == all ]] || gen_args+=(--categories "$cats")
  fi
  # (a) synthetic MVTec-layout data (the generator skips a complete, identical tree) -------------
  echo "[$(stamp)] data ($variant) -> $data"
  "$PY" -m jad.data.synthetic --out "$data" "${gen_args[@]}"

  # (c) anomalib in its own venv ------------------------------------------------------------------
  echo "[$(stamp)] anomalib ($variant) -> $WORK/anomalib_$variant.json"
  env "${PEER_ENV[@]}" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
    "$VENV/bin/python" "$HERE/run_anomalib_patchcore.py" --data "$data" --categories "$cats" \
    --weights "$WORK/wrn50_seed0.pth" --coreset-ratio "$RATIO" --threads "$THREADS" \
    --workdir "$WORK/anomalib_runs_$variant" --out "$WORK/anomalib_$variant.json" \
    2>&1 | tee "$WORK/anomalib_$variant.log" | grep '^\[anomalib\]'

  # (d) jad -----------------------------------------------------------------------------------------
  echo "[$(stamp)] jad ($variant) -> $WORK/jad_$variant/results.json"
  rm -rf "$WORK/jad_$variant"
  "$PY" -m jad.train --config=configs/patchcore_synthetic.py --workdir="$WORK/jad_$variant" \
    --config.data.root="$data" --config.data.categories="$cats" \
    --config.backbone.weights="$WORK/wrn50_jad" --config.patchcore.coreset_ratio="$RATIO" \
    --config.eval.num_heatmaps=0 --quiet 2>&1 | tee "$WORK/jad_$variant.log" | tail -n 8

  # (5, optional) the official PyTorch code -----------------------------------------------------
  official=()
  if [[ -n "${OFFICIAL_SRC:-}" ]]; then
    echo "[$(stamp)] official ($variant) -> $WORK/official_$variant.json"
    env "${PEER_ENV[@]}" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
      "$VENV/bin/python" "$HERE/run_official_patchcore.py" --src "$OFFICIAL_SRC" \
      --data "$data" --categories "$cats" --weights "$WORK/wrn50_seed0.pth" \
      --coreset-ratio "$RATIO" --threads "$THREADS" --out "$WORK/official_$variant.json" \
      2>&1 | tee "$WORK/official_$variant.log" | grep '^\[official\]'
    official=(--official "$WORK/official_$variant.json")
  fi

  # (e) table -------------------------------------------------------------------------------------
  echo
  echo "== $variant: seconds (lower is better), test images/s (higher is better); ratio = peer time / jad time =="
  "$PY" "$HERE/compare_table.py" --jad "$WORK/jad_$variant/results.json" \
    --anomalib "$WORK/anomalib_$variant.json" "${official[@]}" --out "$WORK/table_$variant.md"
  echo
done
