#!/usr/bin/env bash
# The one setup script every job runs (README, CI): a virtualenv in .venv with
#   1. a CPU torch first (torch==2.13.0 comes from this machine's disk; a bare `torch`, asked for by
#      any later package, would pull a multi-GB CUDA build),
#   2. this package and its dev tools,
#   3. robomimic WITHOUT its dependencies: it declares torchvision, whose PyPI build breaks
#      diffusers' models beside a CPU torch (see ../shared/research/install_check.md).
# Later jobs extend this script; they do not copy it. Override the torch pin with TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
pip_quiet() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_quiet "$TORCH_SPEC"
# Meta-World pins mujoco==3.3.0. A venv that already holds mujoco 4.x (split into mujoco-core and
# mujoco-studio, which share the mujoco/ folder) keeps 4.x files after pip's downgrade, and
# `import mujoco` then fails (libmujoco.so.4.0.0); remove the 4.x split packages first.
if .venv/bin/python -m pip show -q mujoco-core >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -y -q mujoco mujoco-core mujoco-studio
fi
pip_quiet -e ".[dev]"
pip_quiet --no-deps "robomimic==0.3.0"
# The study tool's browser tests drive Debian's chromium through Playwright (never a downloaded
# browser); install it where apt is usable and it is missing.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser tests will be skipped"
fi

.venv/bin/python - <<'PY'
import importlib.util, sys
import torch
if importlib.util.find_spec("torchvision") is not None:
    sys.exit("setup: torchvision is installed; it breaks diffusers beside a CPU torch. Remove it.")
from diffusers import DDPMScheduler, UNet1DModel  # noqa: F401  (fails if torchvision sneaked in)
import policy_sampler, robomimic.utils.dataset  # noqa: F401
import metaworld  # noqa: F401  (imports mujoco: fails on a half-downgraded mujoco 4.x)
print(f"setup: ok (torch {torch.__version__}, python {sys.version.split()[0]})")
PY
