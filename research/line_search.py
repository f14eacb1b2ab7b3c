"""One large-batch outer step with a line search: is there a descent direction at a rule?

At `cpu-oja-v0` an outer step of 16 tasks does not measurably move even the training
meta-objective (docs/meta_training.md), and a 32-task signal-to-noise estimate (grad_snr.py)
cannot tell whether a few hundred tasks would resolve a direction. This script takes that
gradient from many independent tasks, as the paper's minibatch of 256 tasks would, and steps
along it by several sizes, to be scored on held-out data by `select_rule.py`:

    python research/line_search.py grads --rule cpu-oja-v0 --tasks 0:128 --out runs/ls/g0.npz
    python research/line_search.py grads --rule cpu-oja-v0 --tasks 128:256 --out runs/ls/g1.npz
    python research/line_search.py step --grads runs/ls/g0.npz runs/ls/g1.npz --out runs/ls
    python research/select_rule.py runs/ls --incumbent cpu-oja-v0 --only-extra \
        --extra runs/ls/step_*.npz --first-seed 200 --seeds 10

`grads` runs one process per task range (so two ranges use both cores), each task drawn and
advanced to a random point of its budget exactly as in `grad_snr.py`, and takes its truncated
meta-gradient (U = `--unroll`); with `--es-horizon T` it instead takes an antithetic
evolution-strategies estimate of the meta-objective after T inner steps from a fresh base model
(`--es-sigma`, and `--inner-lr` to try another inner step size). `step` writes two kinds
of candidates from the mean gradient mu and the per-coordinate second moment m2 of the tasks:
  sgd  theta - s |theta| mu / |mu|          (a step of s of theta's norm along -mu)
  adam theta - lr mu / sqrt(m2 + eps)       (Adam's direction once its moments have settled;
                                            every coordinate moves by at most lr)
"""
import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

from grad_snr import config, rule_theta, snr, task_gradient
from metarule import catalog, inner, outer
from metarule.config import RuleConfig
from metarule.meta_objective import meta_objective
from metarule.tasks import TaskSampler

EPS = 1e-12


def es_pair(flat: np.ndarray, unravel, cfg: outer.MetaTrainConfig, rule_cfg: RuleConfig,
            sampler: TaskSampler, index: int, horizon: int, sigma: float) -> np.ndarray:
    """One task's antithetic evolution-strategies estimate of the gradient of the meta-objective
    after `horizon` inner steps from a fresh base model, smoothed at scale sigma: both
    perturbations see the same base model, data and labeled examples, so the task's own
    variance cancels to first order, and no gradient passes through the chaotic inner loop."""
    group = outer.sample_group(sampler, cfg, index)
    task = group.tasks[0]
    rng = np.random.default_rng([cfg.seed, index, 11])
    params = jax.tree_util.tree_map(lambda a: a[0], outer.init_group_params(group, cfg))
    batches = jnp.asarray(task.unlabeled_batches(rng, horizon))
    labeled = [jnp.asarray(a) for a in outer.fixed_size_labeled(task, rng, cfg)]
    eps = rng.standard_normal(flat.shape).astype(np.float32)
    losses = np.asarray(antithetic_losses(unravel, jnp.stack([flat + sigma * eps,
                                                              flat - sigma * eps]),
                                          params, batches, labeled, rule_cfg))
    if not np.isfinite(losses).all():
        return np.full(flat.shape, np.nan)
    return (losses[0] - losses[1]) / (2 * sigma) * eps


@functools.partial(jax.jit, static_argnames=("unravel", "rule_cfg"))
def antithetic_losses(unravel, thetas, params, batches, labeled, rule_cfg):
    def loss(flat):
        trained = inner.unroll(unravel(flat), params, batches, rule_cfg)
        return meta_objective(trained, *labeled)
    return jax.vmap(loss)(thetas)


def grads_main(args) -> None:
    cfg = config(args, tuple(args.datasets.split(",")))
    sampler = TaskSampler(outer.task_config(cfg), seed=cfg.seed)
    theta = rule_theta(args.rule, cfg)
    flat, unravel = ravel_pytree(theta)  # one unravel: it is a static argument of the jit
    rule_cfg = cfg.rule_cfg.replace(inner_lr=args.inner_lr) if args.inner_lr else cfg.rule_cfg
    first, stop = (int(i) for i in args.tasks.split(":"))
    grads, started = [], time.time()
    for index in tqdm(range(first, stop), desc=f"tasks {args.tasks}"):
        if args.es_horizon:
            grads.append(es_pair(flat, unravel, cfg, rule_cfg, sampler, index,
                                 args.es_horizon, args.es_sigma))
        else:
            grads.append(task_gradient(theta, cfg, sampler, index, args.unroll)[0])
    estimator = (f"es horizon {args.es_horizon} sigma {args.es_sigma} inner lr "
                 f"{rule_cfg.inner_lr}" if args.es_horizon
                 else f"truncated unroll {args.unroll}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, grads=np.stack(grads).astype(np.float32), first=first, stop=stop,
             rule=args.rule, seed=args.seed, datasets=args.datasets, estimator=estimator,
             seconds=time.time() - started)
    print(f"wrote {args.out}: {stop - first} task gradients in {time.time() - started:.0f} s")


def source(part) -> dict[str, str]:
    """What a gradient file estimates: its rule, task stream and estimator."""
    return {k: str(part[k]) for k in ("rule", "seed", "datasets", "estimator")}


def load_grads(paths: list[Path]) -> tuple[np.ndarray, dict]:
    """All tasks' gradients; the parts must cover disjoint tasks of one rule and stream."""
    parts = [np.load(p) for p in paths]
    meta = source(parts[0])
    for p, part in zip(paths, parts):
        if source(part) != meta:
            raise SystemExit(f"line_search: {p} comes from another rule or task stream than "
                             f"{paths[0]}")
    ranges = sorted((int(p["first"]), int(p["stop"])) for p in parts)
    if any(a[1] > b[0] for a, b in zip(ranges, ranges[1:])):
        raise SystemExit(f"line_search: task ranges {ranges} overlap")
    grads = np.concatenate([p["grads"] for p in parts]).astype(np.float64)
    finite = np.isfinite(grads).all(axis=1)  # a perturbed rule that diverged: dropped, counted
    return grads[finite], meta | {"tasks": ranges, "dropped": int(np.sum(~finite))}


def directions(grads: np.ndarray) -> dict[str, np.ndarray]:
    """Unit-free descent directions: -mu/|mu| and Adam's -mu/sqrt(m2)."""
    mu = grads.mean(0)
    m2 = np.mean(grads * grads, axis=0)
    return {"sgd": -mu / np.linalg.norm(mu), "adam": -mu / np.sqrt(m2 + EPS)}


def held_out_t(grads: np.ndarray, splits: int = 200, seed: int = 0) -> dict[str, float]:
    """Is there a direction the tasks share? Over random halvings, the t-statistic of the
    projections of one half's gradients on the other half's mean direction ("t"; ~ N(0, 1)
    apart from the split's own bias when the tasks share nothing), and the same for the
    gradients with fresh random signs for every halving ("t_null"), which share nothing by
    construction: a shared direction shows as t well above t_null."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, flip in (("t", False), ("t_null", True)):
        ts = []
        for _ in range(splits):
            g = grads * rng.choice([-1.0, 1.0], size=(len(grads), 1)) if flip else grads
            order = rng.permutation(len(g))
            a, b = g[order[:len(g) // 2]], g[order[len(g) // 2:]]
            proj = b @ (a.mean(0) / np.linalg.norm(a.mean(0)))
            ts.append(proj.mean() / (proj.std(ddof=1) / np.sqrt(len(proj))))
        out[key] = float(np.median(ts))
    return out


def step_main(args) -> None:
    grads, meta = load_grads(args.grads)
    if meta["rule"].startswith("init:"):
        raise SystemExit("line_search: step from a shipped rule or a rule file, not an init")
    rule = catalog.load_rule(meta["rule"])
    flat, unravel = ravel_pytree(rule.theta)
    flat = np.asarray(flat, np.float64)
    norm = float(np.linalg.norm(flat))
    d_all = directions(grads)
    report = {"source": meta, "theta_norm": norm, "snr": snr(grads),
              "held_out_t": held_out_t(grads),
              # the same on unit gradients, which no heavy-tailed task can dominate
              "held_out_t_unit": held_out_t(grads / np.linalg.norm(grads, axis=1, keepdims=True)),
              "candidates": {}}
    sizes = {"sgd": [float(s) for s in args.sgd.split(",") if s],
             "adam": [float(s) for s in args.adam.split(",") if s]}
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, values in sizes.items():
        for size in values:
            scale = size * norm if kind == "sgd" else size
            moved = flat + scale * d_all[kind]
            path = args.out / f"step_{kind}_{size:g}.npz"
            card = {"name": path.stem, "meta_trained": True,
                    "outer_steps": rule.card.get("outer_steps"),
                    "line_search": {"from": meta["rule"], "direction": kind, "size": size,
                                    "tasks": len(grads), "datasets": meta["datasets"]}}
            catalog.save_rule(path, jax.tree_util.tree_map(
                np.asarray, unravel(moved.astype(np.float32))), rule.cfg, card)
            report["candidates"][path.name] = {
                "direction": kind, "size": size,
                "moved_fraction_of_norm": float(np.linalg.norm(moved - flat) / norm)}
    (args.out / "line_search.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("snr", "held_out_t", "held_out_t_unit")}, indent=1))
    print(f"wrote {len(report['candidates'])} candidates to {args.out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grads", help="truncated meta-gradients of a range of tasks")
    g.add_argument("--rule", default="cpu-oja-v0")
    g.add_argument("--tasks", default="0:128", help="FIRST:STOP task indices")
    g.add_argument("--datasets", default="glyphs14")
    g.add_argument("--widths", default="128")
    g.add_argument("--depths", default="4")
    g.add_argument("--budget", default="200,600")
    g.add_argument("--unroll", type=int, default=8, help="truncation length U")
    g.add_argument("--es-horizon", type=int, default=0,
                   help="instead of the truncated gradient, an antithetic ES estimate of the "
                        "meta-objective after this many inner steps from a fresh base model")
    g.add_argument("--es-sigma", type=float, default=0.01, help="ES perturbation scale")
    g.add_argument("--inner-lr", type=float, default=None,
                   help="the rule's inner step size for ES (default: the preset's)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("step", help="candidates along the mean gradient")
    s.add_argument("--grads", type=Path, nargs="+", required=True)
    s.add_argument("--sgd", default="0.01,0.03", help="step sizes, fractions of |theta|")
    s.add_argument("--adam", default="0.03", help="largest coordinate moves")
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    grads_main(args) if args.command == "grads" else step_main(args)


if __name__ == "__main__":
    main()
