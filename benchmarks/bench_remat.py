"""Which steps of the outer step to rematerialise: the last k of the U = 8 rule applications kept
(their residuals stored), the others recomputed in the backward pass: `truncated.unroll_loss`'s
`kept`, 1 by default.

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

from bench_rule import inputs, outer_step, program_stats
from metarule.config import preset


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
    compiled = {k: outer_step(cfg, k).lower(*step_args).compile() for k in keeps}
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
        print(f"| {args.preset} | {k} | {program_stats(compiled[k])[1]:.0f} | "
              f"{median:.3f} | {base / median:.3f}× |")


if __name__ == "__main__":
    main()
