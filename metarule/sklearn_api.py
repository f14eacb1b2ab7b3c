"""A scikit-learn transformer: fit trains a base model on unlabeled X with a learned rule, transform
returns the 32-d embedding.

    from sklearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegression
    from metarule.sklearn_api import Embedder

    clf = Pipeline([("emb", Embedder()), ("clf", LogisticRegression())])  # the shipped rule
    clf.fit(x_train, y_train)   # the rule never sees y_train; LogisticRegression does
"""
from __future__ import annotations

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from metarule import catalog, evaluate, train

EMBEDDING_DIM = 32  # train_base_model's embedding width, fixed at 32 as in the paper

# sklearn's common checks that Embedder fails by design, with the reason; pass it to
# `check_estimator(..., expected_failed_checks=EXPECTED_FAILED_CHECKS)` or
# `parametrize_with_checks(..., expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)`.
EXPECTED_FAILED_CHECKS = {
    "check_methods_subset_invariance":
        "batch norm normalises with the statistics of the batch being transformed: a row's "
        "embedding depends on the rows transformed with it, and a single row cannot be "
        "transformed",
}


class Embedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Embed data with a base model trained, without labels, by a (meta-learned) rule.

    `fit` applies the rule for `steps` unlabeled batches of X to a freshly initialised base model
    (hidden `widths`, 32-d embedding); `transform` returns that model's embedding. Labels passed to
    `fit` are ignored: the rule is unsupervised, so in a Pipeline only the final estimator sees y.

    Batch norm uses the statistics of the batch being transformed (as in the paper, which has no
    running averages): a row's embedding depends on the other rows in the same `transform` call,
    and `transform` needs at least 2 rows. Transform labeled and test data in one call, or in
    batches of similar composition, to keep their features comparable.

    scikit-learn's common checks pass except those in EXPECTED_FAILED_CHECKS:
    `check_methods_subset_invariance`, which compares transforming rows one at a time with
    transforming them together: by the batch statistics above, the two differ, and single rows
    are refused. Row *order* does not matter: `transform` is exactly invariant to it. No
    estimator tags are changed: a fit is deterministic given `seed` (so not `non_deterministic`),
    and the output is float64 whatever the input dtype (the default `preserves_dtype`).

    Args:
      rule: a rule spec for `metarule.catalog.load_rule` ("untrained", "init:NAME", a shipped
        rule's name or a .npz path), a loaded `metarule.catalog.Rule`, or None (the default) for
        the first shipped meta-trained rule (`metarule.catalog.default_rule_spec()`).
      widths: hidden layer widths of the base model.
      steps: applications of the rule (unlabeled batches) during `fit`; 500 is the protocol
        the shipped rule was chosen and scored with.
      activation: the base model's activation (metarule.config.ACTIVATIONS).
      preset: rule config preset for "untrained" / "init:NAME" specs.
      seed: seeds the rule's random theta (for "untrained"), the base model's initialisation
        and the batch order.
      progress: show a progress bar during `fit`.

    Attributes:
      params_: the trained base model's parameters (numpy arrays).
      rule_name_: name of the rule that trained it.
      n_features_in_: number of input features seen in `fit`.
    """

    def __init__(self, rule=None, widths=(128, 128, 128, 128), steps=500,
                 activation="relu", preset="cpu", seed=0, progress=False):
        self.rule = rule
        self.widths = widths
        self.steps = steps
        self.activation = activation
        self.preset = preset
        self.seed = seed
        self.progress = progress

    def fit(self, X, y=None):
        """Train a base model on X with the rule; y is ignored.

        Args:
          X: (n_samples >= 2, n_features) finite numeric array.
          y: ignored.
        Returns:
          self.
        Raises:
          ValueError: X is not 2-D, not finite, or has fewer than 2 rows.
          metarule.catalog.RuleError: the rule spec cannot be loaded.
          metarule.train.TrainError: the rule drove the model to NaN/inf.
        """
        X = validate_data(self, X, dtype=[np.float32, np.float64], ensure_min_samples=2)
        spec = catalog.default_rule_spec() if self.rule is None else self.rule
        rule = spec if isinstance(spec, catalog.Rule) else \
            catalog.load_rule(spec, preset=self.preset, seed=self.seed)
        params = train.train_base_model(rule, X, self.steps, widths=tuple(self.widths),
                                        activation=self.activation, seed=self.seed,
                                        progress=self.progress)
        # numpy, not device arrays: the fitted estimator then pickles and copies like any other.
        self.params_ = jax.tree_util.tree_map(np.asarray, params)
        self.rule_name_ = rule.name
        self._n_features_out = EMBEDDING_DIM
        return self

    def transform(self, X):
        """The 32-d embedding of X, with batch-norm statistics taken from X itself.

        Args:
          X: (n_samples >= 2, n_features_in_) finite numeric array.
        Returns:
          (n_samples, 32) float64 array.
        Raises:
          sklearn.exceptions.NotFittedError: before `fit`.
          ValueError: X is not 2-D, not finite, has another feature count than in `fit`, or has
            a single row (batch norm needs at least 2).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        if X.shape[0] < 2:
            raise ValueError(f"Embedder.transform needs at least 2 samples, got {X.shape[0]}: "
                             f"batch norm normalises with the statistics of the batch being "
                             f"transformed; transform the sample together with others")
        # Batch norm is blind to row order, but float32 sums are not: embedding the rows in a
        # canonical (lexicographic) order makes the result exactly independent of their order.
        order = np.lexsort(X.T[::-1])
        u = np.empty((X.shape[0], EMBEDDING_DIM))
        u[order] = evaluate.model_embed_fn(self.params_, self.activation)(X[order])
        return u
