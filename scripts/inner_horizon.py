"""How a rule's features change with the number of inner steps, scored without the test split.

A meta-trained rule is applied for as many steps as its user chooses (`Embedder(steps=...)`,
`metarule train --steps`). This script trains fresh 4x128 base models with the rule on the
unlabeled training split of each held-out dataset and scores them along the way by the
meta-objective (Eq. 2, 10-way 10-shot ridge) on labeled examples of that same training split,
as scripts/select_rule.py does, so that a step count can be chosen without reading the test split.

    python scripts/inner_horizon.py cpu-oja-v0 --checkpoints 250,500,1000,2000 --seeds 3

Writes a JSON table (OUT.json) and a plot (OUT.png).
"""
import argparse
import json
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metarule import data, outer, rules  # noqa: E402
from metarule.train import train_base_model  # noqa: E402


def scores_along(rule, ds, checkpoints: list[int], seed: int, shots: int) -> dict[int, float]:
    """{inner step: training-split meta-objective} of one base model trained by `rule`."""
    out = {}

    def record(step, params):
        if step in checkpoints:
            out[step] = outer.few_shot_objective(params, ds.x_train, ds.y_train,
                                                 ds.num_classes, shots, seed)

    # Chunks of 50 steps, so every checkpoint (a multiple of 50) is seen by the callback.
    train_base_model(rule, ds.x_train, max(checkpoints), seed=seed, chunk=50, progress=False,
                     callback=record)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rule", help="rule spec (shipped name or .npz path)")
    parser.add_argument("--checkpoints", default="250,500,1000,2000",
                        help="inner steps to score at, multiples of 50")
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("results/inner_horizon"))
    args = parser.parse_args()
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    if any(c <= 0 or c % 50 for c in checkpoints):
        parser.error("--checkpoints must be positive multiples of 50")
    rule = rules.load_rule(args.rule)
    table = {}
    for name in args.datasets.split(","):
        ds = data.load(name)
        runs = [scores_along(rule, ds, checkpoints, seed, args.shots) for seed in range(args.seeds)]
        table[name] = {str(c): {"mean": float(np.mean([r[c] for r in runs])),
                                "stderr": float(np.std([r[c] for r in runs], ddof=1)
                                                / math.sqrt(len(runs))) if len(runs) > 1
                                else math.nan}
                       for c in checkpoints}
        for c in checkpoints:
            print(f"{name} {c:6d} steps: meta-objective {table[name][str(c)]['mean']:.3f} "
                  f"± {table[name][str(c)]['stderr']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"rule": args.rule, "seeds": args.seeds, "shots": args.shots,
              "split": "train (support and query drawn from the training split)",
              "meta_objective": table}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, row in table.items():
        ax.errorbar(checkpoints, [row[str(c)]["mean"] for c in checkpoints],
                    [row[str(c)]["stderr"] for c in checkpoints], marker="o", label=name)
    ax.set(xscale="log", xlabel="inner steps", title=f"rule {args.rule}",
           ylabel="meta-objective (training split; lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
