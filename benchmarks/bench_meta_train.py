"""Meta-training throughput of the local backend: tasks batched with vmap versus one at a time.

Run alone on an idle machine:
    python benchmarks/bench_meta_train.py --steps 6
For each tasks-per-step M it runs `--steps` outer steps at a fixed unroll U (after one warm-up
step that compiles) on the `cpu` preset's meta-training settings and prints the median seconds
per outer step, outer steps per hour, tasks/s and rule applications per second per core.

`--recompute both` times each outer step twice, alternating: keeping every step's pullback (the
default of `truncated.truncated_grad`) and recomputing every step in the backward pass (remat,
`pullback_bytes=0`), and prints both and their ratio -- a comparison fair on a busy machine.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from unittest import mock

from metarule import outer, truncated

MODES = {"keep": truncated.PULLBACK_BYTES, "recompute": 0}


def measure(m: int, unroll: int, steps: int, modes: tuple[str, ...] = ("keep",)) -> list[dict]:
    cfg = outer.default_config("cpu", tasks_per_step=m, unroll_start=(unroll, unroll),
                               unroll_end=(unroll, unroll), budget=(10**6, 10**6),
                               eval_every_s=0.0, datasets=("glyphs14",), dataset_weights=(1.0,))
    sampler = outer.TaskSampler(outer.task_config(cfg), cfg.seed)
    state, group = outer.init_state(cfg, sampler)
    grad_fn = truncated.truncated_grad
    times = {mode: [] for mode in modes}
    for i in range(steps + 1):  # the first round compiles
        for mode in modes:
            with mock.patch.object(truncated, "truncated_grad", functools.partial(
                    grad_fn, pullback_bytes=MODES[mode])):
                t = time.perf_counter()
                state, group, _ = outer.train_step(state, group, cfg, sampler)
                if i:
                    times[mode].append(time.perf_counter() - t)
    cores = os.cpu_count() or 1
    rows = []
    for mode in modes:
        sec = statistics.median(times[mode])
        rows.append(dict(m=m, mode=mode, sec=sec, per_hour=3600 / sec, tasks_per_s=m / sec,
                         applications_per_s_core=m * unroll / sec / cores))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--unroll", type=int, default=8)
    parser.add_argument("--tasks", default="1,4")
    parser.add_argument("--recompute", choices=("no", "yes", "both"), default="no",
                        help="recompute each step in the backward pass instead of keeping its "
                             "pullback (both: alternate the two and compare)")
    args = parser.parse_args()
    modes = {"no": ("keep",), "yes": ("recompute",), "both": ("keep", "recompute")}[args.recompute]
    print(f"| tasks per step (vmap) | pullbacks | s / outer step (U={args.unroll}) "
          f"| outer steps / h | tasks / s | rule applications / s / core |")
    print("|---|---|---|---|---|---|")
    rows = []
    for m in args.tasks.split(","):
        rows += measure(int(m), args.unroll, args.steps, modes)
        for r in rows[-len(modes):]:
            print(f"| {r['m']} | {r['mode']} | {r['sec']:.2f} | {r['per_hour']:.0f} "
                  f"| {r['tasks_per_s']:.2f} | {r['applications_per_s_core']:.2f} |", flush=True)
    for mode in modes:
        per_mode = [r for r in rows if r["mode"] == mode]
        first, last = per_mode[0], per_mode[-1]
        if len(per_mode) > 1:
            print(f"{mode}: batching {last['m']} tasks gives {last['tasks_per_s'] / first['tasks_per_s']:.2f}× "
                  f"the task throughput of {first['m']}")
    if len(modes) == 2:
        for m in args.tasks.split(","):
            keep, recompute = (r["sec"] for r in rows if r["m"] == int(m))
            print(f"{m} task(s) per step: keeping pullbacks is {recompute / keep:.2f}× as fast "
                  f"as recomputing")


if __name__ == "__main__":
    main()
