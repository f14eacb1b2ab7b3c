"""The Embedder off its domain: 10-shot accuracy on a small tabular dataset against PCA and the
raw features.

    python research/embedder_tabular.py --seeds 10 > results/embedder_tabular.json

scikit-learn's breast cancer data (569 x 30, 2 classes, bundled with scikit-learn) is split once,
stratified, into halves (seed 0); the features are standardised with the first half's statistics.
The unsupervised methods -- the Embedder (shipped rule, default settings), PCA and the identity --
are fit on the first half without labels; per seed, 10 labeled examples per class are drawn from
the first half, a logistic readout (C=1) is fit on their features and scored on the second half.
"""
import argparse
import json
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from metarule import evaluate
from metarule.sklearn_api import Embedder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rule", default=None, help="rule spec (default: the shipped default)")
    args = parser.parse_args()
    x, y = load_breast_cancer(return_X_y=True)
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, stratify=y,
                                                    random_state=0)
    scaler = StandardScaler().fit(x_fit)
    x_fit, x_test = scaler.transform(x_fit), scaler.transform(x_test)
    embedder = Embedder(rule=args.rule).fit(x_fit)
    methods = {"embedder": embedder.transform,
               "pca": PCA(n_components=10, random_state=0).fit(x_fit).transform,
               "raw": np.asarray}
    results = []
    for method, embed_fn in methods.items():
        result = evaluate.few_shot_accuracy(embed_fn, x_fit, y_fit, x_test, y_test, shots=10,
                                            seeds=args.seeds)
        results.append(result.to_json("breast_cancer", method=method))
        print(f"{method}: {100 * result.mean:.1f} +- {100 * result.stderr:.1f}", file=sys.stderr)
    json.dump({"protocol": "breast cancer split in stratified halves (seed 0), standardised; "
                           "methods fit on the first half unlabeled; per seed 10 labeled "
                           "examples per class from it, logistic readout (C=1), scored on the "
                           "second half",
               "command": "python " + " ".join(sys.argv), "rule": embedder.rule_name_,
               "results": results},
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
