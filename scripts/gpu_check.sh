#!/usr/bin/env bash
# The device check (docs/gpu/README.md): bash scripts/gpu_check.sh [--out DIR] [--cpu [--tiny]] [...]
#
# On a lent GPU machine, which has torch but lacks some of our dependencies and every package index,
# the wheels fetched beforehand by scripts/gpu_wheels.sh (carried in .gpu_wheels/) are installed into
# a temporary folder on PYTHONPATH; our own package runs from this working tree. Nothing is fetched.
# Then scripts/gpu_check.py measures everything and writes DIR/summary.json and DIR/report.md.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable} HF_HUB_OFFLINE=1  # nothing is fetched
export PYTHONPATH="$ROOT:$ROOT/envs${PYTHONPATH:+:$PYTHONPATH}"

WHEELS=${GPU_WHEELS:-$ROOT/.gpu_wheels}  # where scripts/gpu_wheels.sh put them
if ! "$PY" -c "import diffusers, gymnasium, mujoco" >/dev/null 2>&1; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $SITE (no index)"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
        "$WHEELS"/*.whl; then
      export PYTHONPATH="$PYTHONPATH:$SITE"  # only packages the machine lacks: none of its own is shadowed
    else
      echo "installing the carried wheels failed; sections needing them will report it" >&2
    fi
  else
    echo "diffusers/gymnasium/mujoco missing and no .gpu_wheels/: run scripts/gpu_wheels.sh first" >&2
  fi
fi
exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"
