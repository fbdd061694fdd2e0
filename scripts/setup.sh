#!/usr/bin/env bash
# The one setup script every job runs (README, CI): a virtualenv in .venv with
#   1. a CPU torch first (torch==2.13.0 comes from this machine's disk; a bare `torch`, asked for by
#      any later package, would pull a multi-GB CUDA build),
#   2. this package and its dev tools,
#   3. robomimic WITHOUT its dependencies: it declares torchvision, whose PyPI build breaks
#      diffusers' models beside a CPU torch (see ../shared/research/install_check.md).
# Later jobs extend this script; they do not copy it. Override the torch pin with TORCH_SPEC.
#
# `bash scripts/setup.sh --lerobot` instead builds a second virtualenv, .venv-lerobot, for the LeRobot
# integration (policy_sampler.integrations.lerobot): LeRobot 0.6.1 needs Python 3.12 and pins
# torch < 2.12, diffusers < 0.40 and numpy < 2.3, so it cannot share .venv. It takes pyenv's
# Python 3.12 (or LEROBOT_PYTHON), installs "lerobot[diffusion,training]==0.6.1" (its own torch, a CUDA build
# that runs on CPU) and this package, editable, beside it. .venv is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--lerobot" ]; then
  PY312=${LEROBOT_PYTHON:-}
  if [ -z "$PY312" ]; then
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    PY312=$(ls -d "$root"/versions/3.12*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$PY312" ] || PY312=$(command -v python3.12 || true)
  fi
  if [ -z "$PY312" ] || ! "$PY312" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    echo "setup --lerobot: needs a Python 3.12 (LeRobot 0.6.1 uses 3.12 syntax); none found among pyenv's" \
         "versions or on PATH. Install one (pyenv install 3.12) or set LEROBOT_PYTHON=/path/to/python3.12." >&2
    exit 1
  fi
  [ -x .venv-lerobot/bin/python ] || "$PY312" -m venv .venv-lerobot
  lr_pip() { .venv-lerobot/bin/python -m pip install -q --disable-pip-version-check "$@"; }
  lr_pip "lerobot[diffusion,training]==0.6.1"   # training: LeRobotDataset and lerobot-train
  lr_pip -e . "pytest>=8" "pytest-timeout>=2.3"
  lr_pip --no-deps "robomimic==0.3.0"
  .venv-lerobot/bin/python - <<'PY'
import sys
import lerobot, torch, diffusers
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy  # noqa: F401
import policy_sampler.integrations.lerobot  # noqa: F401
import metaworld  # noqa: F401
print(f"setup --lerobot: ok (lerobot {lerobot.__version__}, torch {torch.__version__}, "
      f"diffusers {diffusers.__version__}, python {sys.version.split()[0]})")
PY
  exit 0
fi

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
