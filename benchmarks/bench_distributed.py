"""Meta-training throughput of the Ray backend with 1 and 2 workers, beside the local backend
one task at a time (scaling from 1 to 2 workers; batching tasks with worker processes versus
vmap).

Ray workers run one XLA thread each (the default); the last row keeps XLA's thread pool.
The local rows run in this process with XLA's defaults. Run alone on an idle machine:
    python benchmarks/bench_distributed.py --arrivals 12
Every configuration meta-trains on the `cpu` preset's settings with glyphs14 tasks and a fixed
unroll U; the first arrivals of each worker (compilation) are discarded and the task throughput
is measured over the next `--arrivals` gradients from the learner's clock.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from metarule import distributed, outer


def config(tasks_per_step: int, unroll: int) -> outer.MetaTrainConfig:
    return outer.default_config("cpu", tasks_per_step=tasks_per_step,
                                unroll_start=(unroll, unroll), unroll_end=(unroll, unroll),
                                budget=(10**6, 10**6), eval_every_s=0.0,
                                checkpoint_every_s=1e9, datasets=("glyphs14",),
                                dataset_weights=(1.0,))


def ray_throughput(workers: int, tasks_per_worker: int, unroll: int, arrivals: int,
                   single_thread: bool = True) -> float:
    """tasks/s of the Ray backend, from the learner's clock at each gradient's arrival."""
    warm = 2 * workers  # each worker's first truncation compiles
    cfg = config(workers * tasks_per_worker, unroll)
    with tempfile.TemporaryDirectory() as tmp:
        distributed.run(cfg, Path(tmp) / "run", steps=(warm + arrivals) // workers + 1,
                        workers=workers, tasks_per_worker=tasks_per_worker, progress=False,
                        single_thread=single_thread)
        rows = [json.loads(line) for line in open(Path(tmp) / "run" / "metrics.jsonl")]
    times = [r["time_s"] for r in rows if r.get("kind") == "train"][warm:]
    return tasks_per_worker * (len(times) - 1) / (times[-1] - times[0])


def local_throughput(tasks: int, unroll: int, steps: int) -> float:
    """tasks/s of the local backend (outer.train_step, `tasks` vmapped per step)."""
    cfg = config(tasks, unroll)
    sampler = outer.TaskSampler(outer.task_config(cfg), cfg.seed)
    state, group = outer.init_state(cfg, sampler)
    state, group, _ = outer.train_step(state, group, cfg, sampler)  # compiles
    t = time.perf_counter()
    for _ in range(steps):
        state, group, _ = outer.train_step(state, group, cfg, sampler)
    return tasks * steps / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=12, help="gradients measured per run")
    parser.add_argument("--unroll", type=int, default=8)
    parser.add_argument("--tasks-per-worker", type=int, default=1)
    args = parser.parse_args()
    t = args.tasks_per_worker
    rows = [("local, 1 task at a time", local_throughput(1, args.unroll, args.arrivals)),
            (f"local, {2 * t} tasks vmapped", local_throughput(2 * t, args.unroll,
                                                                args.arrivals // 2)),
            (f"ray, 1 worker × {t} task(s)", ray_throughput(1, t, args.unroll, args.arrivals)),
            (f"ray, 2 workers × {t} task(s)", ray_throughput(2, t, args.unroll, args.arrivals)),
            (f"ray, 2 workers × {t} task(s), XLA thread pool",
             ray_throughput(2, t, args.unroll, args.arrivals, single_thread=False))]
    base = rows[0][1]
    print(f"| backend (cpu preset, glyphs14, U={args.unroll}) | tasks / s | × local 1 task |")
    print("|---|---|---|")
    for name, tps in rows:
        print(f"| {name} | {tps:.2f} | {tps / base:.2f} |", flush=True)
    print(f"ray 1 → 2 workers: {rows[3][1] / rows[2][1]:.2f}×")


if __name__ == "__main__":
    main()
