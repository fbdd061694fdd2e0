#!/usr/bin/env bash
# The README's main job on a fresh CPU machine, in about 8-9 minutes on 2 cores:
#   1. scripts/setup.sh (the .venv),
#   2. 60 ObstacleReach demos from the scripted expert (bimodal: it passes the obstacle left or right),
#   3. the small policy trained for 3000 steps (about 5-6 minutes on one thread),
#   4. every sampler plus the DDIM-16 / DDIM-10 baselines on the same 10 seeded episodes,
# then the table (success with Wilson 95% intervals, latency p50/p99 per chunk, rounds, NFE, accepted
# length, share of episodes passing left). Everything goes to demo_out/ (re-running replaces it):
#   demo_out/demos.hdf5, demo_out/policy/{best,last}, demo_out/eval/{results.json,results.csv,results.png,videos/}
# Knobs (environment): DEMO_OUT, DEMO_DEMOS, DEMO_STEPS, DEMO_EPISODES, DEMO_THREADS, DEMO_SAMPLERS
# (a hydra list, e.g. "[ddpm,paradigms]"), DEMO_SKIP_SETUP=1 to reuse an existing .venv as is.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${DEMO_OUT:-demo_out}
N_DEMOS=${DEMO_DEMOS:-60}
STEPS=${DEMO_STEPS:-3000}
EPISODES=${DEMO_EPISODES:-10}
THREADS=${DEMO_THREADS:-1}     # one intra-op thread is the fastest for the small U-Net on a shared CPU
SAMPLERS=${DEMO_SAMPLERS:-[ddpm,picard,paradigms,speculative,autospeculative,speculative_picard]}
TASK=PolicySampler/ObstacleReach-v0
PY=.venv/bin/python
export MUJOCO_GL=${MUJOCO_GL:-egl} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}

start=$SECONDS
stamp() { echo "[demo $((SECONDS - start)) s] $*"; }

if [ "${DEMO_SKIP_SETUP:-0}" != 1 ]; then
  stamp "setup (.venv)"
  bash scripts/setup.sh
fi

rm -rf "$OUT"
mkdir -p "$OUT"

stamp "collecting $N_DEMOS demos of $TASK"
$PY scripts/collect_demos.py task=$TASK n_demos="$N_DEMOS" out="$OUT/demos.hdf5" progress=false

stamp "training the small policy for $STEPS steps ($THREADS thread(s))"
$PY scripts/train.py task=$TASK dataset="$OUT/demos.hdf5" out_dir="$OUT/policy" policy=small \
  train.steps="$STEPS" train.num_threads="$THREADS" train.val_every=500 train.progress=false

stamp "evaluating the samplers on $EPISODES episodes"
$PY scripts/evaluate.py checkpoint="$OUT/policy" samplers="$SAMPLERS" n_episodes="$EPISODES" \
  out_dir="$OUT/eval" num_threads="$THREADS" videos=2

stamp "done: $OUT/eval/results.{json,csv,png}, videos in $OUT/eval/videos"
