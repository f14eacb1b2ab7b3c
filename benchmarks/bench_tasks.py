"""How fast the task sampler makes data, to check it never stalls meta-training.

A rule step on the `cpu` preset takes roughly 5-20 ms per batch of 64-128, so the sampler
must make well over 100 batches/s on one core. Run:  python benchmarks/bench_tasks.py
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from metarule.tasks import TaskConfig, TaskSampler


def bench(cfg: TaskConfig, n_tasks: int, n_batches: int, seed: int = 0) -> dict[str, float]:
    """Time sampling n_tasks tasks, each with n_batches unlabeled batches and a support and
    query set; return batches/s for the unlabeled batches alone and for everything."""
    sampler = TaskSampler(cfg, seed)
    rng = np.random.default_rng(seed)
    t_sample = t_unlabeled = t_labeled = 0.0
    for _ in range(n_tasks):
        t0 = time.perf_counter()
        task = sampler.sample()
        t1 = time.perf_counter()
        task.unlabeled_batches(rng, n_batches)
        t2 = time.perf_counter()
        task.labeled(rng, 2 * cfg.k_per_class)
        t3 = time.perf_counter()
        t_sample += t1 - t0
        t_unlabeled += t2 - t1
        t_labeled += t3 - t2
    total = n_tasks * n_batches
    return {"unlabeled_batches_per_s": total / t_unlabeled,
            "end_to_end_batches_per_s": total / (t_sample + t_unlabeled + t_labeled),
            "ms_per_task_sample": 1e3 * t_sample / n_tasks,
            "ms_per_support_query": 1e3 * t_labeled / n_tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--batches", type=int, default=8, help="unlabeled batches per task")
    parser.add_argument("--p-augment", type=float, default=TaskConfig.p_augment)
    args = parser.parse_args()
    for batch in (128, 64):
        cfg = dataclasses.replace(TaskConfig(), inner_batch=batch, p_augment=args.p_augment)
        TaskSampler(cfg, 0)   # warm the dataset cache and page cache before timing
        result = bench(cfg, args.tasks, args.batches)
        print(f"batch {batch:3d}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
