#!/usr/bin/env bash
# The measurements of docs/vision_transformer.md, from scratch on a CPU (one torch thread per job):
#   1. demos: ObstacleReach from its top camera and Meta-World button-press-topdown from its corner4
#      camera (obs_mode=pixels_state, 84 px), plus ObstacleReach state demos (the README demo's 60),
#   2. training (budget: STUDY_VISION_STEPS steps (STUDY_WARMUP_STEPS of them warm-up) at batch 64 for the vision policies, STUDY_STATE_STEPS
#      at batch 256 for the state transformer; the state U-Net is assets/policies/obstacle_reach_small,
#      trained by scripts/demo.sh on the same 60 demos for 3000 steps at batch 256),
#   3. on held-out env seeds (from 1000): the rounds per chunk of the exact samplers at batch 1 (one env at a
#      time) on STUDY_ROUND_EPISODES episodes (stage rounds, rounds_<run>/), then the success of ddpm, paradigms,
#      speculative_picard and DDIM-10 on STUDY_EPISODES episodes rolled side by side (stage eval, eval_<run>/),
#   4. the training benchmark (scripts/benchmark_training.py: run it on a quiet machine) and the tables
#      (scripts/vision_transformer_tables.py).
# Stages run in order; STUDY_STAGES picks some ("demos train rounds eval bench tables"), STUDY_RUNS some of the
# runs (reach_vision metaworld_vision reach_transformer reach_unet). Everything goes to $STUDY_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${STUDY_OUT:-results/vision_transformer}
STAGES=${STUDY_STAGES:-demos train rounds eval bench tables}
RUNS=${STUDY_RUNS:-reach_vision metaworld_vision reach_transformer reach_unet}
N_DEMOS=${STUDY_DEMOS:-100}
VISION_STEPS=${STUDY_VISION_STEPS:-3000}
STATE_STEPS=${STUDY_STATE_STEPS:-3000}
WARMUP=${STUDY_WARMUP_STEPS:-500}
EPISODES=${STUDY_EPISODES:-50}
ROUND_EPISODES=${STUDY_ROUND_EPISODES:-10}
PY=${PYTHON:-.venv/bin/python}
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

REACH=PolicySampler/ObstacleReach-v0
BUTTON=PolicySampler/MetaWorld-button-press-topdown-v3
SAMPLERS="[ddpm,paradigms,speculative_picard]"
BASELINES="[{label: ddim-10, sampler: ddim, num_inference_steps: 10}]"
ROUND_SAMPLERS="[speculative,speculative_picard,autospeculative,paradigms]"
mkdir -p "$OUT"
start=$SECONDS
stamp() { echo "[study $((SECONDS - start)) s] $*"; }
has() { [[ " $1 " == *" $2 "* ]]; }

task_of() { case $1 in metaworld_*) echo $BUTTON ;; *) echo $REACH ;; esac; }
demos_of() { case $1 in reach_vision) echo reach_pixels ;; metaworld_vision) echo button_pixels ;; *) echo reach_state ;; esac; }
checkpoint_of() { if [ "$1" = reach_unet ]; then echo assets/policies/obstacle_reach_small; else echo "$OUT/$1"; fi; }
# Meta-World episodes are capped at 200 steps (2x the longest button-press-topdown demo, 94 steps) instead of 500
max_steps_of() { case $1 in metaworld_*) echo 200 ;; *) echo null ;; esac; }

if has "$STAGES" demos; then
  # only the demos the chosen runs need (reach_unet is the committed asset: no demos)
  has "$RUNS" reach_transformer && { stamp "demos reach_state"
    $PY scripts/collect_demos.py task=$REACH n_demos=60 out="$OUT/reach_state.hdf5" progress=false; }
  has "$RUNS" reach_vision && { stamp "demos reach_pixels"
    $PY scripts/collect_demos.py task=$REACH n_demos="$N_DEMOS" out="$OUT/reach_pixels.hdf5" progress=false \
      +env_kwargs.obs_mode=pixels_state +env_kwargs.image_size=84; }
  has "$RUNS" metaworld_vision && { stamp "demos button_pixels"
    $PY scripts/collect_demos.py task=$BUTTON n_demos="$N_DEMOS" out="$OUT/button_pixels.hdf5" progress=false \
      +env_kwargs.obs_mode=pixels_state +env_kwargs.image_size=84; }
fi

if has "$STAGES" train; then
  for run in $RUNS; do
    data="$OUT/$(demos_of "$run").hdf5"
    case $run in
      reach_vision|metaworld_vision) args=(policy=vision_small train.steps="$VISION_STEPS" train.batch_size=64) ;;
      # DP-T's own optimizer (Chi et al.: AdamW lr 1e-4, weight decay 1e-3, betas 0.9/0.95)
      reach_transformer) args=(policy=small policy.model=transformer train.steps="$STATE_STEPS"
                               train.weight_decay=1e-3 "train.betas=[0.9,0.95]") ;;
      *) continue ;;  # reach_unet: the committed asset
    esac
    stamp "training $run"
    $PY scripts/train.py task="$(task_of "$run")" dataset="$data" out_dir="$OUT/$run" "${args[@]}" \
      train.warmup_steps="$WARMUP" train.num_threads=1 train.val_every=500 train.progress=false
  done
fi

common_of() {
  echo checkpoint="$(checkpoint_of "$1")" task="$(task_of "$1")" seed=1000 num_threads=1 progress=false \
    max_steps="$(max_steps_of "$1")"
}

# the rounds first: they hold even for a lightly trained net
if has "$STAGES" rounds; then
  for run in $RUNS; do
    stamp "rounds of $run at batch 1"
    $PY scripts/evaluate.py $(common_of "$run") samplers="$ROUND_SAMPLERS" "baselines=[]" \
      n_episodes="$ROUND_EPISODES" n_envs=1 out_dir="$OUT/rounds_$run" videos=0
  done
fi

if has "$STAGES" eval; then
  for run in $RUNS; do
    stamp "evaluating $run"
    $PY scripts/evaluate.py $(common_of "$run") samplers="$SAMPLERS" "baselines=$BASELINES" n_episodes="$EPISODES" \
      out_dir="$OUT/eval_$run" videos=1
  done
fi

if has "$STAGES" bench; then
  stamp "training benchmark"
  $PY scripts/benchmark_training.py --out "$OUT"
fi

if has "$STAGES" tables; then
  stamp "tables"
  $PY scripts/vision_transformer_tables.py --out "$OUT" --runs $RUNS
fi
stamp "done"
