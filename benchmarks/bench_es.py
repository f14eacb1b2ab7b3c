"""ES throughput: antithetic pairs scored per second, in one process and on 1 and 2 Ray workers.

Each generation scores 2 * --pairs members on one group of --tasks tasks for --horizon inner
steps (metarule/es.py); the first generation of each backend compiles and is not timed. Run it
on an idle machine:

    python benchmarks/bench_es.py --preset cpu --horizon 150 --pairs 4 --generations 3
"""
import argparse
import time

import jax
import ray

from metarule import catalog, distributed, es, outer


def pairs_per_s(cfg: es.ESConfig, dim: int, evaluate, generations: int) -> float:
    algo, params = es.strategy(cfg, dim)
    state = es.init_state(cfg, algo, params)
    state, _ = es.generation_step(cfg, algo, params, state, evaluate)  # compiles
    t0 = time.perf_counter()
    for _ in range(generations):
        state, _ = es.generation_step(cfg, algo, params, state, evaluate)
    return cfg.pairs * generations / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--init", default="cpu-oja-v0")
    p.add_argument("--horizon", type=int, default=150)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--workers", default="1,2", help="Ray worker counts to time")
    args = p.parse_args()
    meta = outer.default_config(args.preset, init=args.init, tasks_per_step=args.tasks,
                                eval_every_s=0.0)
    cfg = es.ESConfig(meta=meta, pairs=args.pairs, horizon=(args.horizon, args.horizon),
                      horizon_quantum=1, draws=5)
    theta0 = catalog.start_theta(meta.init, meta.rule_cfg, jax.random.PRNGKey(meta.seed))
    evaluator = es.Evaluator(cfg, theta0)
    dim = evaluator.space.dim
    rows = [("local (1 process)", pairs_per_s(cfg, dim, es.local_evaluate(cfg, evaluator),
                                              args.generations))]
    for workers in (int(w) for w in args.workers.split(",") if w):
        distributed.connect(None, workers)
        rows.append((f"ray, {workers} worker(s)", pairs_per_s(
            cfg, dim, es.ray_evaluate(cfg, theta0, workers), args.generations)))
        ray.shutdown()
    print(f"| backend ({args.preset} preset, {args.tasks} tasks x {args.horizon} inner steps, "
          f"{args.pairs} pairs) | pairs/s | ratio |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.3f} | {rate / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
