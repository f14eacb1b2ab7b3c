"""How a rule's features change with the number of inner steps and the base model's shape,
scored without the test split.

A meta-trained rule is applied for as many steps, and to as wide and deep a base model, as its
user chooses (`Embedder(steps=..., widths=...)`, `metarule train --steps --widths`). This script
trains fresh base models of each `--shapes` with the rule on the unlabeled training split of each
held-out dataset, less its validation rows (`data.validation_split`), and scores them along the
way on the validation rows: by the meta-objective (Eq. 2, 10-way 10-shot ridge; the mean over
`--draws` support/query draws), as research/select_rule.py does, and by the 10-shot logistic
accuracy (`--val-seeds` draws of the labeled examples from the training rows) -- so that a step
count and a shape can be chosen without reading the test split.

    python research/inner_horizon.py cpu-oja-v0 --checkpoints 250,500,1000,2000 --seeds 3
    python research/inner_horizon.py cpu-oja-v0 --checkpoints 500,1000 \
        --shapes 128,128,128,128 512,512

Writes a JSON table (OUT.json) and a plot (OUT.png).
"""
import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metarule import catalog, data, evaluate, outer  # noqa: E402
from metarule.train import train_base_model  # noqa: E402


def scores_along(rule, ds, checkpoints: list[int], seed: int, shots: int, widths: tuple[int, ...],
                 draws: int, val_seeds: int) -> dict[str, dict[int, float]]:
    """{"meta_objective" | "val_accuracy": {inner step: score}} of one base model of hidden
    `widths` trained by `rule` on a data.validation_split dataset `ds`, scored on its
    validation rows (ds.x_val) only."""
    out = {"meta_objective": {}, "val_accuracy": {}}

    def record(step, params):
        if step in checkpoints:
            out["meta_objective"][step] = float(np.mean([
                outer.few_shot_objective(params, ds.x_val, ds.y_val, ds.num_classes, shots,
                                         seed * draws + d) for d in range(draws)]))
            out["val_accuracy"][step] = evaluate.few_shot_accuracy(
                evaluate.model_embed_fn(params), ds.x_train, ds.y_train, ds.x_val, ds.y_val,
                shots, val_seeds).mean

    # Chunks of 50 steps, so every checkpoint (a multiple of 50) is seen by the callback.
    train_base_model(rule, ds.x_train, max(checkpoints), widths=widths, seed=seed, chunk=50,
                     progress=False, callback=record)
    return out


def mean_stderr(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "stderr": evaluate.stderr(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rule", help="rule spec (shipped name or .npz path)")
    parser.add_argument("--checkpoints", default="250,500,1000,2000",
                        help="inner steps to score at, multiples of 50")
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    parser.add_argument("--shapes", nargs="+", default=["128,128,128,128"],
                        help="hidden widths of the base model, one comma-separated list each")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--draws", type=int, default=1,
                        help="support/query draws averaged in a model's meta-objective")
    parser.add_argument("--val-seeds", type=int, default=3,
                        help="draws of labeled examples for the validation accuracy")
    parser.add_argument("--out", type=Path, default=Path("results/inner_horizon"))
    args = parser.parse_args()
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    if any(c <= 0 or c % 50 for c in checkpoints):
        parser.error("--checkpoints must be positive multiples of 50")
    try:
        shapes = [tuple(int(w) for w in shape.split(",")) for shape in args.shapes]
    except ValueError:
        parser.error("--shapes takes comma-separated widths, e.g. 128,128,128,128 512,512")
    if any(w <= 0 for shape in shapes for w in shape):
        parser.error("--shapes: widths must be positive")
    rule = catalog.load_rule(args.rule)
    table = {}
    for name in args.datasets.split(","):
        ds = data.validation_split(data.load(name))
        for widths in shapes:
            key = f"{name} {'x'.join(map(str, widths))}"
            runs = [scores_along(rule, ds, checkpoints, seed, args.shots, widths, args.draws,
                                 args.val_seeds) for seed in range(args.seeds)]
            table[key] = {score: {str(c): mean_stderr([r[score][c] for r in runs])
                                  for c in checkpoints} for score in runs[0]}
            for c in checkpoints:
                objective = table[key]["meta_objective"][str(c)]
                accuracy = table[key]["val_accuracy"][str(c)]
                print(f"{key} {c:6d} steps: meta-objective {objective['mean']:.3f} "
                      f"± {objective['stderr']:.3f}, validation accuracy "
                      f"{100 * accuracy['mean']:.1f} ± {100 * accuracy['stderr']:.1f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"rule": args.rule, "seeds": args.seeds, "shots": args.shots, "draws": args.draws,
              "val_seeds": args.val_seeds,
              "split": "validation (data.validation_split): the rule trains on the training "
                       "split less the validation rows; every score is on the validation rows",
              "scores": table}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, row in table.items():
        for ax, score in zip(axes, ("meta_objective", "val_accuracy")):
            ax.errorbar(checkpoints, [row[score][str(c)]["mean"] for c in checkpoints],
                        [row[score][str(c)]["stderr"] for c in checkpoints], marker="o",
                        label=key)
    axes[0].set(xscale="log", xlabel="inner steps", title=f"rule {args.rule}",
                ylabel="meta-objective (validation; lower is better)")
    axes[1].set(xscale="log", xlabel="inner steps", ylabel="10-shot validation accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
