"""10-shot accuracy of the Embedder's features with each kind of batch-norm statistics.

    python research/embedder_batch_stats.py --seeds 10 > results/embedder_batch_stats.json

Per dataset, one Embedder (the shipped rule, 4 x 128, 500 steps, seed 0) is fit on the unlabeled
training split, as `metarule train` does; it is then scored by `metarule eval`'s protocol (10
labeled examples per class drawn from the training split per seed, logistic readout, the whole
test split) twice:
  - "batch": the paper's batch norm, each call normalised with its own statistics (labeled + test
    rows embedded in one call), what `metarule eval` reports;
  - "fit": inference mode, normalised with the fit data's statistics, what `Embedder.transform`
    returns.
The test split chooses nothing here: `transform`'s inference mode is the default because it maps
rows independently.
"""
import argparse
import json
import sys

from metarule import catalog, data, evaluate, train
from metarule.sklearn_api import Embedder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    results = []
    for name in args.datasets.split(","):
        ds = data.load(name)
        emb = Embedder(steps=args.steps, seed=0).fit(ds.x_train)
        embed_fns = {"batch": evaluate.model_embed_fn(emb.params_, emb.activation),
                     "fit": emb.transform}
        for stats, embed_fn in embed_fns.items():
            result = evaluate.few_shot_accuracy(embed_fn, ds.x_train, ds.y_train, ds.x_test,
                                                ds.y_test, shots=10, seeds=args.seeds)
            results.append(result.to_json(name, stats=stats))
            print(f"{name} {stats}: {100 * result.mean:.1f} +- {100 * result.stderr:.1f}",
                  file=sys.stderr)
    spec = catalog.default_rule_spec()
    rule = train.rule_info(catalog.load_rule(spec), spec)
    json.dump({"protocol": "metarule eval's: 10 labeled examples per class from the training "
                           "split per seed, logistic readout (C=1), the whole test split; one "
                           "Embedder per dataset fit on the unlabeled training split",
               "command": "python " + " ".join(sys.argv), "embedder": emb.get_params(),
               "rule": {k: v for k, v in rule.items() if k != "card"},
               "results": results}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
