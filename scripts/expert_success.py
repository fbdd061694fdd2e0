"""Print every task's scripted-expert success rate over seeded episodes, as a markdown table.

    python scripts/expert_success.py                          # every registered task, 50 seeds each
    python scripts/expert_success.py --tasks PolicySampler/ObstacleReach-v0 --seeds 20
    python scripts/expert_success.py --tasks PolicySampler/ObstacleReach-v0 --obs-mode pixels_state   # + camera frames
"""

from __future__ import annotations

import argparse
import time

import gymnasium
from tqdm import tqdm

import policy_sampler_envs
from policy_sampler.data.demos import collect_episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", help="task ids (default: every registered task)")
    parser.add_argument("--seeds", type=int, default=50, help="episodes per task, env seeds 0..N-1")
    parser.add_argument("--threshold", type=float, default=0.9, help="success rate a task must reach")
    parser.add_argument("--obs-mode", default="state", choices=["state", "pixels_state"],
                        help="the tasks' observations (pixels_state renders a camera frame every step)")
    args = parser.parse_args()
    tasks = args.tasks or policy_sampler_envs.available_tasks()
    unknown = sorted(set(tasks) - set(policy_sampler_envs.available_tasks()))
    if unknown or args.seeds < 1:
        parser.error(f"unknown tasks {unknown}; available: {policy_sampler_envs.available_tasks()}"
                     if unknown else "--seeds must be at least 1")
    rows = []
    for task in tqdm(tasks, unit="task"):
        env = gymnasium.make(task, **({} if args.obs_mode == "state" else {"obs_mode": args.obs_mode}))
        expert = policy_sampler_envs.make_expert(task, env)
        start = time.perf_counter()
        episodes = [collect_episode(env, expert, seed) for seed in range(args.seeds)]
        seconds = time.perf_counter() - start
        env.close()
        successes = sum(e.success for e in episodes)
        steps = sum(len(e.actions) for e in episodes)
        rows.append((task, successes, steps / seconds))
    print(f"\nobs_mode={args.obs_mode}\n\n| task | expert success ({args.seeds} seeds) | >= {args.threshold:.0%} | steps/s |")
    print("|---|---|---|---|")
    for task, successes, rate in rows:
        ok = "yes" if successes >= args.threshold * args.seeds else "**no**"
        print(f"| {task} | {successes}/{args.seeds} = {successes / args.seeds:.0%} | {ok} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
