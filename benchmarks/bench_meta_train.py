"""Meta-training throughput of the local backend: tasks batched with vmap versus one at a time.

Run alone on an idle machine:
    python benchmarks/bench_meta_train.py --steps 6
For each tasks-per-step M it runs `--steps` outer steps at a fixed unroll U (after one warm-up
step that compiles) on the `cpu` preset's meta-training settings and prints the median seconds
per outer step, outer steps per hour, tasks/s and rule applications per second per core.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from metarule import outer


def measure(m: int, unroll: int, steps: int) -> dict:
    cfg = outer.default_config("cpu", tasks_per_step=m, unroll_start=(unroll, unroll),
                               unroll_end=(unroll, unroll), budget=(10**6, 10**6),
                               eval_every_s=0.0, datasets=("glyphs14",), dataset_weights=(1.0,))
    sampler = outer.TaskSampler(outer.task_config(cfg), cfg.seed)
    state, group = outer.init_state(cfg, sampler)
    state, group, _ = outer.train_step(state, group, cfg, sampler)  # compiles
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, group, _ = outer.train_step(state, group, cfg, sampler)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    cores = os.cpu_count() or 1
    return dict(m=m, sec=sec, per_hour=3600 / sec, tasks_per_s=m / sec,
                applications_per_s_core=m * unroll / sec / cores)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--unroll", type=int, default=8)
    parser.add_argument("--tasks", default="1,4")
    args = parser.parse_args()
    print(f"| tasks per step (vmap) | s / outer step (U={args.unroll}) | outer steps / h "
          f"| tasks / s | rule applications / s / core |")
    print("|---|---|---|---|---|")
    rows = [measure(int(m), args.unroll, args.steps) for m in args.tasks.split(",")]
    for r in rows:
        print(f"| {r['m']} | {r['sec']:.2f} | {r['per_hour']:.0f} | {r['tasks_per_s']:.2f} | "
              f"{r['applications_per_s_core']:.2f} |", flush=True)
    print(f"batching {rows[-1]['m']} tasks: {rows[-1]['tasks_per_s'] / rows[0]['tasks_per_s']:.2f}× "
          f"the task throughput of {rows[0]['m']}")


if __name__ == "__main__":
    main()
