"""Which steps of the outer step to rematerialise: the last k of the U = 8 rule applications kept
(their residuals stored), the others recomputed in the backward pass, as `truncated.unroll_loss`
does with k = 1.

Run alone on an idle machine, e.g.
    python benchmarks/bench_remat.py --preset paper --keep 0,1,2,4 --repeats 9
Prints, per k, XLA's peak memory, the gradient's largest difference from k = first of --keep,
and the median wall time over calls alternating between the variants (fair on a busy machine).
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from bench_rule import compiled_stats, inputs
from metarule import rule
from metarule.config import preset
from metarule.meta_objective import meta_objective


def outer_step(cfg, keep: int):
    """value_and_grad of the mean meta-objective, the last `keep` steps not rematerialised."""
    def loss(theta, params, batches, labeled):
        def step(params, x):
            params, _ = rule.unsupervised_update(theta, params, x, cfg)
            return params, meta_objective(params, *labeled)

        split = batches.shape[0] - keep
        params, losses = jax.lax.scan(jax.checkpoint(step), params, batches[:split])
        for x in batches[split:]:
            params, last = step(params, x)
            losses = jnp.append(losses, last)
        return jnp.mean(losses)
    return jax.jit(jax.value_and_grad(loss))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--keep", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    cfg = preset(args.preset)
    theta, params, _, batches, labeled = inputs(cfg, args.width)
    step_args = (theta, params, batches, labeled)
    keeps = [int(k) for k in args.keep.split(",")]
    steps = {k: outer_step(cfg, k) for k in keeps}
    compiled = {k: fn.lower(*step_args).compile() for k, fn in steps.items()}
    reference = compiled[keeps[0]](*step_args)[1]
    times = {k: [] for k in keeps}
    for i in range(args.repeats + 1):  # the first round warms up
        for k in keeps:
            t = time.perf_counter()
            grad = jax.block_until_ready(compiled[k](*step_args)[1])
            if i:
                times[k].append(time.perf_counter() - t)
            elif k != keeps[0]:
                leaves = zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(reference))
                diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in leaves)
                print(f"keep {k}: largest gradient difference from keep {keeps[0]}: {diff:.1e}")
    base = statistics.median(times[keeps[0]])
    print(f"| preset | steps kept (of 8) | peak MB | outer step s | speed-up vs keep {keeps[0]} |")
    print("|---|---|---|---|---|")
    for k in keeps:
        median = statistics.median(times[k])
        print(f"| {args.preset} | {k} | {compiled_stats(steps[k], step_args)[1]:.0f} | "
              f"{median:.3f} | {base / median:.3f}× |")


if __name__ == "__main__":
    main()
