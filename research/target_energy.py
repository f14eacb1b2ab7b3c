"""How much of the meta-objective's target energy the augmentation targets carry.

Samples tasks from meta-training's distribution (the cpu preset's by default), draws each one's
support set as meta-training does (outer.fixed_size_labeled) and, after the meta-objective's
target normalisation (centred, unit mean squared norm, App.21-22), reports the share of the
squared norm in the rotation/shift columns, and the fraction of tasks that are augmented:

    python research/target_energy.py --tasks 1000
"""
import argparse

import numpy as np

from metarule import outer
from metarule.tasks import AUG_TARGETS


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--aug-weight", type=float, default=1.0)
    args = parser.parse_args()
    cfg = outer.default_config(args.preset, aug_weight=args.aug_weight)
    sampler = outer.TaskSampler(outer.task_config(cfg), 0)
    rng = np.random.default_rng(0)
    shares, augmented = [], 0
    for _ in range(args.tasks):
        task = sampler.sample(rng=rng)
        if not task.augmented:
            continue
        augmented += 1
        y = outer.fixed_size_labeled(task, rng, cfg)[1]
        y = y - y.mean(0)
        energy = np.square(y).sum(0)
        shares.append(energy[-len(AUG_TARGETS):].sum() / energy.sum())
    print(f"augmented tasks: {augmented / args.tasks:.1%} of {args.tasks}; share of the "
          f"target energy in {', '.join(AUG_TARGETS)} (aug weight {args.aug_weight}): "
          f"{np.mean(shares):.1%} (median {np.median(shares):.1%})")


if __name__ == "__main__":
    main()
