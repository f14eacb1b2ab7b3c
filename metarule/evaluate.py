"""The few-shot evaluation protocol: 10 labeled examples per class, a linear readout, the full test
split, mean +- standard error over seeds (Sec. 5.3). Logistic regression (scikit-learn, C = 1,
lbfgs) on unstandardised features, as the authors' own baseline measurements used.

Every method is a function `embed_fn(x) -> features` (numpy in, numpy out), so learned rules,
baselines and raw pixels are scored by the same code.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from metarule import base_model, meta_objective

EmbedFn = Callable[[np.ndarray], np.ndarray]
READOUTS = ("logistic", "ridge")
LOGISTIC_MAX_ITER = 10_000  # unstandardised raw pixels need a few thousand lbfgs iterations


@dataclass(frozen=True)
class EvalResult:
    """Few-shot accuracies of one method on one dataset, one entry per seed."""
    shots: int
    seeds: int
    readout: str
    mean: float
    stderr: float  # NaN for a single seed: the spread is then unknown
    accuracies: list[float]

    def to_json(self, dataset: str, **extra) -> dict:
        """A JSON-ready dict; `extra` (method name, training steps, ...) is merged in.

        A NaN standard error becomes None, as JSON has no NaN.
        """
        out = {"dataset": dataset, **asdict(self), **extra}
        if math.isnan(out["stderr"]):
            out["stderr"] = None
        return out


def sample_shots(y_train: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Class-balanced draw of `shots` training indices per class, sorted by class.

    The draw depends only on (y_train, shots, seed), so every method sees the same labeled
    examples for a given seed.
    """
    y_train = np.asarray(y_train)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y_train):
        members = np.flatnonzero(y_train == c)
        if len(members) < shots:
            raise ValueError(f"class {c} has {len(members)} training examples, need {shots}")
        picks.append(rng.choice(members, size=shots, replace=False))
    return np.concatenate(picks)


def stderr(values) -> float:
    """Standard error of the mean: std (ddof=1) / sqrt(n); NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / np.sqrt(values.size))


def logistic_readout(u_lab: np.ndarray, y_lab: np.ndarray, u_test: np.ndarray) -> np.ndarray:
    """scikit-learn LogisticRegression (C=1, lbfgs) on unstandardised features, as the authors'
    evaluation did; returns test predictions."""
    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=LOGISTIC_MAX_ITER)
    with warnings.catch_warnings():
        # A readout that stops short of the optimum still scores; the accuracy is what we report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(u_lab, y_lab)
    return clf.predict(u_test)


def ridge_readout(u_lab: np.ndarray, y_lab: np.ndarray, u_test: np.ndarray,
                  l2: float = meta_objective.RIDGE_L2) -> np.ndarray:
    """The meta-objective's ridge on scale-normalised features and one-hot targets; argmax."""
    classes, y_idx = np.unique(y_lab, return_inverse=True)
    u_lab, u_test = jnp.asarray(u_lab, jnp.float32), jnp.asarray(u_test, jnp.float32)
    scale = meta_objective.feature_scale(u_lab)
    coef, intercept = meta_objective.ridge_fit(
        u_lab / scale, jax.nn.one_hot(y_idx, len(classes)), l2)
    scores = meta_objective.ridge_predict(coef, intercept, u_test / scale)
    return classes[np.asarray(jnp.argmax(scores, axis=-1))]


def _readout_fn(readout: str):
    if readout == "logistic":
        return logistic_readout
    if readout == "ridge":
        return ridge_readout
    raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")


def few_shot_accuracy(embed_fn: EmbedFn, x_train: np.ndarray, y_train: np.ndarray,
                      x_test: np.ndarray, y_test: np.ndarray, shots: int = 10, seeds: int = 10,
                      readout: str = "logistic") -> EvalResult:
    """Few-shot test accuracy of `embed_fn`'s features, over seeds 0 .. seeds-1.

    Per seed: draw `shots` labeled examples per class from the training split (`sample_shots`),
    embed labeled and test examples in ONE call (a batch-norm model then takes its statistics from
    the labeled + test batch), fit the readout on the labeled features and score the whole test
    split.

    Args:
      embed_fn: features of a batch, (N, D) -> (N, F).
      x_train, y_train: the split the labeled examples are drawn from.
      x_test, y_test: the split scored, used whole.
      shots: labeled examples per class.
      seeds: number of draws.
      readout: "logistic" (the reported accuracy) or "ridge" (the meta-objective's readout).
    Returns:
      EvalResult with the per-seed accuracies, their mean and standard error.
    """
    return fitted_few_shot_accuracy(lambda x_lab, y_lab, seed: embed_fn, x_train, y_train,
                                    x_test, y_test, shots, seeds, readout)


def fitted_few_shot_accuracy(fit_fn: Callable[[np.ndarray, np.ndarray, int], EmbedFn],
                             x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                             y_test: np.ndarray, shots: int = 10, seeds: int = 10,
                             readout: str = "logistic", first_seed: int = 0) -> EvalResult:
    """`few_shot_accuracy` for methods that train on each seed's labeled examples.

    `fit_fn(x_labeled, y_labeled, seed) -> embed_fn` runs once per seed on that seed's draw, e.g.
    `lambda x, y, s: baselines.supervised(x, y, seed=s).embed_fn`. Seeds are first_seed,
    first_seed + 1, ...: a fresh range confirms a choice made on another.
    """
    fit_predict = _readout_fn(readout)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    accuracies = []
    for seed in range(first_seed, first_seed + seeds):
        idx = sample_shots(y_train, shots, seed)
        embed_fn = fit_fn(x_train[idx], y_train[idx], seed)
        u = np.asarray(embed_fn(np.concatenate([x_train[idx], x_test])))
        if not np.all(np.isfinite(u)):
            raise ValueError(f"embed_fn returned non-finite features (seed {seed})")
        pred = fit_predict(u[:len(idx)], y_train[idx], u[len(idx):])
        accuracies.append(float(np.mean(pred == y_test)))
    return EvalResult(shots=shots, seeds=seeds, readout=readout,
                      mean=float(np.mean(accuracies)), stderr=stderr(accuracies),
                      accuracies=accuracies)


def _embed_layer(params: base_model.Params, x: jax.Array, activation: str, layer: int):
    return base_model.apply(params, x, activation).xs[layer]


# Module-level so every model of the same shapes shares one compilation.
_embed_layer_jit = jax.jit(_embed_layer, static_argnums=(2, 3))


def model_embed_fn(params: base_model.Params, activation: str = "relu",
                   layer: int = -1) -> EmbedFn:
    """A numpy-in/numpy-out, jitted embedding of a base model; batch norm uses the batch given.

    The paper's protocol, which `metarule eval` uses: labeled and test rows are embedded in one
    call and normalised with that call's statistics. `metarule.Embedder.transform` instead
    normalises with fixed statistics of its fit data, so that rows embed independently.

    Args:
      params: base model parameters.
      activation: the model's activation.
      layer: which x^l to return; -1 is the embedding x^L, 1 the first hidden layer.
    """
    def embed_fn(x: np.ndarray) -> np.ndarray:
        return np.asarray(_embed_layer_jit(params, jnp.asarray(x, jnp.float32), activation, layer))
    return embed_fn
