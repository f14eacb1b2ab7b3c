"""Cost of the learned rule: one inner step, one outer step (U = 8, remat), FLOPs, memory.

Run alone on an idle machine (nothing else heavy), e.g.
    python benchmarks/bench_rule.py --repeats 7 > docs/bench_rule.txt
Prints a Markdown table: median wall time over `--repeats` calls after one warm-up call,
XLA's FLOP count and memory analysis of the compiled program, the achieved GFLOP/s, and the
cost relative to one backprop SGD step of the same MLP.

With `--against OLD_RULE_PY` (a copy of an earlier metarule/rule.py) it instead times both
rules' inner and outer steps side by side, alternating calls, and prints the medians and their
ratio: a comparison that stays fair on a machine busy with other work.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import time
from unittest import mock

import jax
import jax.numpy as jnp
import optax

from metarule import base_model, catalog, rule, truncated
from metarule.config import BaseModelConfig, preset
from metarule.rule import unsupervised_update

UNROLL = 8


def timed(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compiled_stats(fn, args) -> tuple[float, float]:
    """(GFLOP, peak MB) from XLA's cost and memory analyses of the compiled program."""
    return program_stats(fn.lower(*args).compile())


def program_stats(compiled) -> tuple[float, float]:
    """(GFLOP, peak MB) of an already compiled program."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - mem.alias_size_in_bytes)
    return cost.get("flops", float("nan")) / 1e9, peak / 2**20


def outer_gflop(outer, theta, params, batches, labeled) -> float:
    """FLOPs of the outer step. XLA's cost analysis counts a loop body once, so the scan over U
    steps is unrolled and the count extrapolated linearly from U = 1 and U = 2 (compiling all
    U = 8 unrolled takes minutes; for the cpu preset the extrapolation is within 2% of it)."""
    with mock.patch.object(jax.lax, "scan", functools.partial(jax.lax.scan, unroll=True)):
        one, two = (compiled_stats(outer, (theta, params, batches[:u], labeled))[0]
                    for u in (1, 2))
    return one + (len(batches) - 1) * (two - one)


def sgd_step_fn(activation: str = "relu"):
    """One backprop SGD step of the base MLP with a linear 10-way head (the supervised cost)."""
    def loss(params, head, x, y):
        logits = base_model.embed(params, x, activation) @ head
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, head, x, y):
        grads = jax.grad(loss, argnums=(0, 1))(params, head, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, (params, head), grads)
    return step


def inputs(cfg, width: int):
    """theta, the base model's params, one unlabeled batch, U of them, and a labeled 10-way,
    10-shot task."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = base_model.init(keys[0], BaseModelConfig(196, hidden=(width,) * 4))
    theta = catalog.init_rule("oja-learned", cfg, keys[1])
    x = jax.random.uniform(keys[2], (cfg.inner_batch, 196))
    batches = jax.random.uniform(keys[3], (UNROLL, cfg.inner_batch, 196))
    support_query = jax.random.uniform(keys[3], (2, 100, 196))
    y = jax.nn.one_hot(jnp.arange(100) % 10, 14)
    labeled = truncated.LabeledBatch(support_query[0], y, support_query[1], y)
    return theta, params, x, batches, labeled


def bench(preset_name: str, width: int, repeats: int) -> dict:
    cfg = preset(preset_name)
    batch = cfg.inner_batch
    theta, params, x, batches, labeled = inputs(cfg, width)
    inner = jax.jit(lambda th, p, xb: unsupervised_update(th, p, xb, cfg)[0])
    inner_args = (theta, params, x)
    inner_s = timed(inner, inner_args, repeats)
    inner_gflop, inner_mb = compiled_stats(inner, inner_args)

    outer = jax.jit(lambda th, p, b, lb: truncated.meta_grad(th, p, b, lb, cfg)[1])
    outer_args = (theta, params, batches, labeled)
    outer_s = timed(outer, outer_args, max(3, repeats // 2))
    outer_mb = compiled_stats(outer, outer_args)[1]
    outer_flops = outer_gflop(outer, *outer_args)

    sgd = sgd_step_fn()
    head = jnp.zeros((32, 10))
    sgd_args = (params, head, x, jnp.arange(batch) % 10)
    sgd_s = timed(sgd, sgd_args, repeats)
    sgd_gflop, _ = compiled_stats(sgd, sgd_args)
    return dict(preset=preset_name, width=width, batch=batch, inner_ms=inner_s * 1e3,
                inner_gflop=inner_gflop, inner_gflops=inner_gflop / inner_s, inner_mb=inner_mb,
                outer_s=outer_s, outer_gflop=outer_flops, outer_mb=outer_mb,
                sgd_ms=sgd_s * 1e3, flop_ratio=inner_gflop / sgd_gflop,
                time_ratio=inner_s / sgd_s)


def load_rule(path: str):
    spec = importlib.util.spec_from_file_location("rule_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outer_step(cfg, kept: int = 1):
    """The outer step (U = 8, remat): value_and_grad of the mean meta-objective of
    truncated.unroll_loss, its last `kept` steps not rematerialised."""
    return jax.jit(jax.value_and_grad(
        lambda th, p, b, lb: truncated.unroll_loss(th, p, b, lb, cfg, kept=kept)[0]))


def compiled_steps(module, preset_name: str, width: int):
    """The inner and the outer step (as in `bench`) of one rule module, compiled, with their
    arguments and the time unit. The outer step traces truncated.unroll_loss with `module` in
    place of metarule.rule."""
    cfg = preset(preset_name)
    theta, params, x, batches, labeled = inputs(cfg, width)
    inner = jax.jit(lambda th, p, xb: module.unsupervised_update(th, p, xb, cfg)[0])
    outer = outer_step(cfg)
    with mock.patch.object(truncated, "rule", module):
        outer_args = (theta, params, batches, labeled)
        return {"inner step ms": (inner.lower(theta, params, x).compile(), (theta, params, x), 1e3),
                "outer step (U=8, remat) s": (outer.lower(*outer_args).compile(), outer_args, 1.0)}


def side_by_side(against: str, preset_name: str, width: int, repeats: int) -> None:
    """Median wall time of the old rule (`against`) and this one, calls alternating."""
    steps = [compiled_steps(load_rule(against), preset_name, width),
             compiled_steps(rule, preset_name, width)]
    for name in steps[0]:
        times = [[], []]
        for i in range(repeats + 1):  # the first round warms up
            for version, step in enumerate(steps):
                fn, args, _ = step[name]
                t = time.perf_counter()
                jax.block_until_ready(fn(*args))
                if i:
                    times[version].append(time.perf_counter() - t)
        old, new = (statistics.median(t) * steps[0][name][2] for t in times)
        print(f"| {preset_name} | 196→4×{width}→32 | {name} | {old:.2f} | {new:.2f} "
              f"| {old / new:.2f}× |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--widths", default="128,512")
    parser.add_argument("--presets", default="paper,cpu")
    parser.add_argument("--against", metavar="OLD_RULE_PY",
                        help="time this rule.py against an earlier copy, side by side")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    if args.against:
        print("| preset | shape | step | old | new | old/new |")
        print("|" + "---|" * 6)
        for width in map(int, args.widths.split(",")):
            for name in args.presets.split(","):
                side_by_side(args.against, name, width, args.repeats)
        return
    print("| preset | shape | batch | inner step ms | inner GFLOP | GFLOP/s | inner peak MB "
          "| outer step (U=8, remat) s | outer GFLOP | GFLOP/s | outer peak MB | SGD step ms "
          "| rule/SGD FLOP | rule/SGD time |")
    print("|" + "---|" * 14)
    rows = []
    for width in map(int, args.widths.split(",")):
        for name in args.presets.split(","):
            r = bench(name, width, args.repeats)
            rows.append(r)
            print(f"| {r['preset']} | 196→4×{width}→32 | {r['batch']} | {r['inner_ms']:.1f} | "
                  f"{r['inner_gflop']:.2f} | {r['inner_gflops']:.0f} | {r['inner_mb']:.0f} | "
                  f"{r['outer_s']:.2f} | {r['outer_gflop']:.1f} | "
                  f"{r['outer_gflop'] / r['outer_s']:.0f} | {r['outer_mb']:.0f} | "
                  f"{r['sgd_ms']:.2f} | {r['flop_ratio']:.0f}× | {r['time_ratio']:.0f}× |",
                  flush=True)
    for width in map(int, args.widths.split(",")):
        by = {r["preset"]: r for r in rows if r["width"] == width}
        if {"paper", "cpu"} <= by.keys():
            print(f"width {width}: cpu preset outer-step throughput = "
                  f"{by['paper']['outer_s'] / by['cpu']['outer_s']:.1f}× the paper preset's")


if __name__ == "__main__":
    main()
