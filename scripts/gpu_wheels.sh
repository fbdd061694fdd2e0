#!/usr/bin/env bash
# Run HERE (a machine with a package index), before lending the check to a GPU machine:
#     bash scripts/gpu_wheels.sh
# Fetches the Python 3.12 wheels of exactly what scripts/gpu_check.sh imports and the lent machine
# lacks (diffusers for the schedules; gymnasium, its farama-notifications and mujoco for the real
# ObstacleReach task) into .gpu_wheels/ (ignored by git), which the device tool carries
# (docs/gpu/README.md). Their own dependencies are on that machine already (numpy, huggingface-hub,
# safetensors, requests, filelock, regex, Pillow, cloudpickle, typing-extensions, absl-py, etils).
# hydra, omegaconf and antlr4 (no wheel) stay out of the device path. Versions: those installed for
# PYTHON here if it has them, else the pins below.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DEST="$ROOT/.gpu_wheels"
LIMIT_MB=48  # the device tool carries 64 MiB in all, the working tree included

declare -A PINS=([diffusers]=0.42.1 [gymnasium]=1.4.0 [farama-notifications]=0.0.6 [mujoco]=3.3.0)
specs=()
for pkg in diffusers gymnasium farama-notifications mujoco; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))" 2>/dev/null || echo "${PINS[$pkg]}")
  specs+=("$pkg==$version")
done

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$DEST.tmp" "${specs[@]}"
size_mb=$(du -sm "$DEST.tmp" | cut -f1)
if [ "$size_mb" -gt "$LIMIT_MB" ]; then
  echo "the wheels take ${size_mb} MB, over the ${LIMIT_MB} MB left for them in a device call" >&2
  exit 1
fi
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "wheels in $DEST (${size_mb} MB): carry it as \".gpu_wheels\" (docs/gpu/README.md)"
ls -1 "$DEST"
