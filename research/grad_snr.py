"""How noisy is one task's meta-gradient? Signal-to-noise of the truncated meta-gradient at a rule.

Meta-training averages M tasks' truncated gradients per outer step (M = 4-8 here, 256 in the
paper). This script draws N independent tasks from the meta-training distribution (the same
sampler, datasets and base-model shapes as `meta-train`), advances each task's fresh base model
a random number of inner steps within its budget with the rule, and takes one truncated
meta-gradient (U inner steps) there. From the N per-task gradients g_i it estimates

  |mu|^2 = (|sum g_i|^2 - sum |g_i|^2) / (N (N - 1))   (unbiased; mu = the expected gradient)
  noise  = sum |g_i - g_mean|^2 / (N - 1)               (trace of one task's covariance)

and from them the expected cosine between an M-task average and mu,
cos_M = |mu| / sqrt(|mu|^2 + noise / M), and the M at which cos_M reaches 0.5 and 0.9.

    python research/grad_snr.py --rules init:sanger,cpu-oja-v0 --tasks 32 \
        --widths 128 --depths 4 --budget 200,600 --out results/grad_snr.json
"""
import argparse
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

from metarule import catalog, inner, outer, truncated
from metarule.tasks import TaskSampler

CHUNK = 50  # inner steps per jitted call while advancing a task, so that one shape compiles


def rule_theta(spec: str, cfg: outer.MetaTrainConfig):
    if spec.startswith("init:"):
        return catalog.init_rule(spec[5:], cfg.rule_cfg)
    return catalog.load_rule(spec).theta


def config(args, datasets: tuple[str, ...] | None = None) -> outer.MetaTrainConfig:
    """The tasks drawn: the `cpu` preset's meta-training distribution, one task per group, with
    the base-model shapes and budgets of `args`; `datasets` equally weighted (None: the preset's
    mix)."""
    mix = {} if datasets is None else {
        "datasets": datasets, "dataset_weights": tuple(1 / len(datasets) for _ in datasets)}
    return outer.default_config(
        "cpu", tasks_per_step=1, seed=args.seed,
        widths=tuple(int(w) for w in args.widths.split(",")),
        depths=tuple(int(d) for d in args.depths.split(",")),
        budget=tuple(int(b) for b in args.budget.split(",")), **mix)


def task_gradient(theta, cfg: outer.MetaTrainConfig, sampler: TaskSampler, index: int,
                  unroll: int) -> tuple[np.ndarray, str]:
    """One task's truncated meta-gradient at a random point of its inner-step budget."""
    group = outer.sample_group(sampler, cfg, index)
    rng = np.random.default_rng([cfg.seed, index, 7])
    params = outer.init_group_params(group, cfg)
    single = jax.tree_util.tree_map(lambda a: a[0], params)
    advance = int(rng.integers(0, max(1, (group.budget - unroll) // CHUNK + 1))) * CHUNK
    for _ in range(advance // CHUNK):
        batches = group.tasks[0].unlabeled_batches(rng, CHUNK)
        single = inner.unroll(theta, single, batches, cfg.rule_cfg, group.activation)
    params = jax.tree_util.tree_map(lambda a: a[None], single)
    batches, labeled = outer.step_data(group, cfg, index, unroll)
    _, _, grad, _ = truncated.truncated_grad(theta, params, batches, labeled, cfg.rule_cfg,
                                             group.activation)
    return np.asarray(ravel_pytree(grad)[0], np.float64), group.tasks[0].dataset


def snr(grads: np.ndarray) -> dict:
    n = len(grads)
    total = grads.sum(0)
    mu_sq = (total @ total - np.sum(grads * grads)) / (n * (n - 1))
    noise = np.sum(np.square(grads - grads.mean(0))) / (n - 1)
    unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    cos = unit @ unit.T
    out = {"tasks": n, "mu_sq": float(mu_sq), "noise": float(noise),
           "mean_pairwise_cos": float((cos.sum() - n) / (n * (n - 1))),
           "mean_grad_norm": float(np.mean(np.linalg.norm(grads, axis=1)))}
    if mu_sq > 0:
        for m in (1, 4, 8, 32, 256):
            out[f"cos_M{m}"] = float(math.sqrt(mu_sq / (mu_sq + noise / m)))
        # cos_M >= c  <=>  M >= noise c^2 / (mu_sq (1 - c^2))
        for c in (0.5, 0.9):
            out[f"tasks_for_cos_{c}"] = float(noise * c * c / (mu_sq * (1 - c * c)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="init:sanger,cpu-oja-v0")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--unroll", type=int, default=8)
    parser.add_argument("--widths", default="128")
    parser.add_argument("--depths", default="4")
    parser.add_argument("--budget", default="200,600")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/grad_snr.json"))
    args = parser.parse_args()
    cfg = config(args)
    sampler = TaskSampler(outer.task_config(cfg), seed=cfg.seed)
    report = {"command": "python research/grad_snr.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "rules": {}}
    for spec in args.rules.split(","):
        theta = rule_theta(spec, cfg)
        grads, datasets, started = [], [], time.time()
        for index in tqdm(range(args.tasks), desc=spec):
            g, dataset = task_gradient(theta, cfg, sampler, index, args.unroll)
            grads.append(g)
            datasets.append(dataset)
        grads = np.stack(grads)
        entry = {"all": snr(grads), "seconds": round(time.time() - started)}
        for name in sorted(set(datasets)):
            rows = [i for i, d in enumerate(datasets) if d == name]
            if len(rows) > 2:
                entry[name] = snr(grads[rows])
        report["rules"][spec] = entry
        print(spec, json.dumps(entry["all"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
