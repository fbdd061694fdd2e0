#!/usr/bin/env bash
# The trained-LeRobot-policy table (docs/lerobot.md, README): for ObstacleReach and Meta-World drawer-open,
#   1. expert demos (scripts/collect_demos.py; env seeds from 0),
#   2. a local LeRobotDataset and a state-only LeRobot DiffusionPolicy trained by LeRobot's own
#      lerobot-train, offline (scripts/train_lerobot.py),
#   3. scripts/evaluate.py on the LeRobot policy folder: ddpm, paradigms, speculative_picard and the
#      DDIM-16 / DDIM-10 baselines on the same held-out episodes (env seeds from 1000),
# each task's table printed and written to OUT/<task>/eval/results.{json,csv,png}. Needs .venv-lerobot
# (bash scripts/setup.sh --lerobot). Steps already done (demos, policy) are kept on a re-run; evaluation
# runs again. Knobs (environment): LEROBOT_OUT (default results/lerobot), LEROBOT_DEMOS (100),
# LEROBOT_STEPS (8000), LEROBOT_EPISODES (20), LEROBOT_THREADS (1), LEROBOT_TASKS (both, space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${LEROBOT_OUT:-results/lerobot}
N_DEMOS=${LEROBOT_DEMOS:-100}
STEPS=${LEROBOT_STEPS:-8000}
EPISODES=${LEROBOT_EPISODES:-20}
THREADS=${LEROBOT_THREADS:-1}
TASKS=${LEROBOT_TASKS:-"PolicySampler/ObstacleReach-v0 PolicySampler/MetaWorld-drawer-open-v3"}
PY=.venv-lerobot/bin/python
[ -x "$PY" ] || { echo "lerobot_experiment: needs .venv-lerobot; run bash scripts/setup.sh --lerobot" >&2; exit 1; }
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

start=$SECONDS
stamp() { echo "[lerobot_experiment $((SECONDS - start)) s] $*"; }
for task in $TASKS; do
  dir="$OUT/$(echo "${task#PolicySampler/}" | tr -c 'A-Za-z0-9_.\n-' '_')"
  mkdir -p "$dir"
  if [ ! -f "$dir/demos.hdf5" ]; then
    stamp "$task: collecting $N_DEMOS demos"
    $PY scripts/collect_demos.py task="$task" n_demos="$N_DEMOS" out="$dir/demos.hdf5" progress=false
  fi
  if [ ! -f "$dir/policy/train/checkpoints/last/pretrained_model/policy_sampler.json" ]; then
    rm -rf "$dir/policy"
    stamp "$task: lerobot-train, $STEPS steps"
    $PY scripts/train_lerobot.py demos="$dir/demos.hdf5" out_dir="$dir/policy" steps="$STEPS"
  fi
  stamp "$task: evaluating on $EPISODES episodes"
  $PY scripts/evaluate.py checkpoint="$dir/policy/train" samplers="[ddpm,paradigms,speculative_picard]" \
    n_episodes="$EPISODES" out_dir="$dir/eval" num_threads="$THREADS" videos=0 progress=false
done
stamp "done: $OUT/<task>/eval/results.{json,csv,png}"
