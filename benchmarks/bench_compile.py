"""Cold compile time of the rule's programs: the inner step, the meta-training outer step, and
metarule.meta's meta-gradient, each in a fresh process with JAX's compilation cache off.

Run alone on an idle machine, e.g.
    python benchmarks/bench_compile.py --presets cpu,paper
Prints a Markdown table with, per program, the seconds spent tracing the Python code into a
jaxpr, lowering it to StableHLO, and compiling it with XLA, their total, the CPU time of that
total (all threads; on a busy machine closer than the wall time to what an idle one takes), the
size of the lowered program (StableHLO lines, which compile time follows), and one call of the
compiled program. The per-step meta-gradient is many small programs: its compile time is its
first call less its second.

`--variants` compiles the outer step with one thing changed at a time, to show what its compile
time is made of (see VARIANTS).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from unittest import mock

# Shapes as meta-training draws them: the cpu preset's single base-model shape (outer.CPU_OVERRIDES:
# 2 x 64 units, 10-way tasks) and, for the paper preset, 4 x 128 units and 30-way tasks. Both
# 10 shots per class, M = 4 tasks vmapped, U = 8 steps per truncation, 196 inputs (14 x 14).
SHAPES = {
    "cpu": dict(hidden=(64, 64), ways=10),
    "paper": dict(hidden=(128,) * 4, ways=30),
    "tiny": dict(hidden=(8,), ways=4),
}
TASKS, UNROLL, INPUTS, SHOTS, AUG = 4, 8, 196, 10, 4

PROGRAMS = {
    "inner": "inner step: jit(rule.unsupervised_update)",
    "outer": "outer step: value_and_grad of unroll_loss, vmapped over M tasks",
    "per_step": "outer step as outer.train_step runs it (truncated_grad, per-step programs)",
    "meta": "meta.VectorizedTruncatedStep.meta_loss_and_grad",
}
# The outer step with one thing changed; each patch applies inside the child process only.
VARIANTS = {
    "kept0": "no Python-unrolled last step (unroll_loss kept=0: every step in the scan)",
    "one_task": "a single task, no vmap",
    "one_layer": "one hidden layer instead of the preset's",
    "no_custom_vjp": "plain convolutions and batch norm (autodiff, no custom VJPs)",
    "no_remat": "no jax.checkpoint around the scanned step",
    "inner_grad": "value_and_grad of a single rule step and its meta-objective, no scan",
    "xla_opt0": "XLA_FLAGS=--xla_backend_optimization_level=0 (less LLVM optimisation)",
}


def inputs(preset_name: str, hidden: tuple[int, ...], tasks: int):
    import jax
    import jax.numpy as jnp

    from metarule import base_model, rule, truncated
    from metarule.config import BaseModelConfig, preset

    cfg = preset(preset_name)
    k = SHOTS * SHAPES[preset_name]["ways"]
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    theta = rule.init_theta(keys[0], cfg)
    params = jax.vmap(lambda key: base_model.init(key, BaseModelConfig(INPUTS, hidden=hidden)))(
        jax.random.split(keys[1], tasks))
    batches = jax.random.uniform(keys[2], (tasks, UNROLL, cfg.inner_batch, INPUTS))
    x = jax.random.uniform(keys[3], (tasks, 2, k, INPUTS))
    ways = SHAPES[preset_name]["ways"]
    y = jnp.broadcast_to(jax.nn.one_hot(jnp.arange(k) % ways, ways + AUG), (tasks, k, ways + AUG))
    return cfg, theta, params, batches, truncated.LabeledBatch(x[:, 0], y, x[:, 1], y)


def staged(fn, args) -> dict:
    """Trace, lower and compile `fn` for `args` one stage at a time, then call it once."""
    import jax

    cpu0, t0 = time.process_time(), time.perf_counter()
    traced = jax.jit(fn).trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    cpu3, t3 = time.process_time(), time.perf_counter()
    jax.block_until_ready(compiled(*args))
    t4 = time.perf_counter()
    return dict(trace_s=t1 - t0, lower_s=t2 - t1, compile_s=t3 - t2, run_s=t4 - t3,
                cpu_s=cpu3 - cpu0, hlo_lines=lowered.as_text().count("\n"))


def child(preset_name: str, program: str, variant: str | None) -> dict:
    if variant == "xla_opt0":  # read when the backend starts, so before jax is imported
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_backend_optimization_level=0")
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_compilation_cache_dir", None)
    import jax.numpy as jnp

    from metarule import kernels, rule, truncated

    hidden = SHAPES[preset_name]["hidden"][:1] if variant == "one_layer" else \
        SHAPES[preset_name]["hidden"]
    tasks = 1 if variant == "one_task" else TASKS
    cfg, theta, params, batches, labeled = inputs(preset_name, hidden, tasks)
    patches = []
    if variant == "no_custom_vjp":
        patches = [mock.patch.object(rule, "conv1d", kernels.circular_conv),
                   mock.patch.object(rule, "bn_relu",
                                     lambda m, eps: jax.nn.relu(kernels.batch_norm(m, eps)))]
    if variant == "no_remat":
        patches = [mock.patch.object(jax, "checkpoint", lambda f, **_: f)]
    for p in patches:
        p.start()

    if program == "inner":
        one = jax.tree_util.tree_map(lambda a: a[0], (params, batches[:, 0]))
        return staged(lambda th, p, x: rule.unsupervised_update(th, p, x, cfg), (theta, *one))
    if program == "per_step":  # many small programs: time the first call against the second
        times, cpu = [], []
        for _ in range(2):
            c, t = time.process_time(), time.perf_counter()
            jax.block_until_ready(truncated.truncated_grad(theta, params, batches, labeled, cfg))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return dict(compile_s=times[0] - times[1], run_s=times[1], cpu_s=cpu[0] - cpu[1])
    if program == "meta":
        from metarule import meta

        step = meta.VectorizedTruncatedStep(
            step=meta.TruncatedStep(rule=cfg, num_classes=SHAPES[preset_name]["ways"]),
            num_tasks=tasks)
        states = meta.TaskState(params, jnp.zeros(tasks, jnp.int32),
                                jax.random.split(jax.random.PRNGKey(1), tasks))
        ints = jnp.broadcast_to(jnp.arange(labeled.x_a.shape[1]) % step.step.num_classes,
                                labeled.y_a.shape[:2])
        fewshot = meta.FewShot(labeled.x_a, ints, labeled.x_b, ints)
        return staged(step.meta_loss_and_grad, (theta, states, batches, fewshot))

    if variant == "inner_grad":
        def task_loss(th, p, b, lb):
            return truncated.step_and_loss(th, p, b[0], lb, cfg)[1]
    else:
        kept = 0 if variant == "kept0" else 1

        def task_loss(th, p, b, lb):
            return truncated.unroll_loss(th, p, b, lb, cfg, kept=kept)[0]

    def outer_loss(th, p, b, lb):
        if variant == "one_task":
            return task_loss(th, *jax.tree_util.tree_map(lambda a: a[0], (p, b, lb)))
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0))(th, p, b, lb))

    return staged(jax.value_and_grad(outer_loss), (theta, params, batches, labeled))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="cpu,paper")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--variants", default="",
                        help=f"outer-step variants to compile too: {', '.join(VARIANTS)}")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset_name, program, variant = args.child
        print(json.dumps(child(preset_name, program, None if variant == "-" else variant)))
        return
    import jax
    print(f"jax {jax.__version__}, backend {jax.default_backend()}; each row a fresh process, "
          f"compilation cache off; M={TASKS} tasks, U={UNROLL}, {SHOTS} shots")
    print("| preset | program | trace s | lower s | XLA compile s | total s | CPU s "
          "| StableHLO lines | first call s |")
    print("|" + "---|" * 9)
    runs = [(p, prog, "-") for p in args.presets.split(",") for prog in args.programs.split(",")]
    runs += [(p, "outer", v) for p in args.presets.split(",") for v in args.variants.split(",")
             if v]
    for preset_name, program, variant in runs:
        out = subprocess.run([sys.executable, __file__, "--child", preset_name, program, variant],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = r.get("trace_s", 0) + r.get("lower_s", 0) + r["compile_s"]
        name = PROGRAMS[program] if variant == "-" else f"outer step, {VARIANTS[variant]}"
        cells = [format(r[key], spec) if key in r else "—"
                 for key, spec in (("trace_s", ".1f"), ("lower_s", ".1f"), ("hlo_lines", "d"))]
        print(f"| {preset_name} | {name} | {cells[0]} | {cells[1]} | "
              f"{r['compile_s']:.1f} | {total:.1f} | {r['cpu_s']:.1f} | {cells[2]} | "
              f"{r['run_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
