"""Score each named starting rule with no meta-training: 10-shot accuracy (logistic
readout, 2000 test images) after `--steps` inner steps on a 4x128 base model, per dataset.

    python research/compare_starts.py --steps 200 --seeds 5
"""
import argparse
import json

from metarule import baselines, catalog, data, evaluate
from metarule.train import train_base_model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    args = parser.parse_args()
    starts = ["random-init (no rule)", "init:random", *(f"init:{n}" for n in catalog.INITIAL_RULES)]
    results = {}
    for name in args.datasets.split(","):
        ds = data.validation_split(data.load(name))  # a start is chosen here: no test split
        x_val, y_val = ds.x_val[:2000], ds.y_val[:2000]
        for start in starts:
            if start.startswith("random-init"):
                def fit(x, y, seed):
                    return baselines.random_init(ds.input_dim, seed).embed_fn
            else:
                rule = catalog.load_rule(start, args.preset)

                def fit(x, y, seed, rule=rule):
                    return evaluate.model_embed_fn(train_base_model(
                        rule, ds.x_train, args.steps, seed=seed, progress=False))
            res = evaluate.fitted_few_shot_accuracy(fit, ds.x_train, ds.y_train, x_val, y_val,
                                                    shots=10, seeds=args.seeds)
            results.setdefault(start, {})[name] = (res.mean, res.stderr)
    names = args.datasets.split(",")
    print(f"| start ({args.steps} inner steps, {args.seeds} seeds, preset {args.preset}) | "
          + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for start, row in results.items():
        print(f"| {start} | " + " | ".join(f"{100 * row[n][0]:.1f} ± {100 * row[n][1]:.1f}"
                                            for n in names) + " |")
    print()
    print("```json\n" + json.dumps(results) + "\n```")


if __name__ == "__main__":
    main()
