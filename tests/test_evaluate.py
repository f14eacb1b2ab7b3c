import json
import math

import jax
import numpy as np
import pytest

from metarule import base_model, evaluate
from metarule.config import BaseModelConfig


def clusters(n_per_class, classes=5, dim=8, spread=0.05, seed=0):
    """Gaussian clusters around fixed centres; `seed` draws the noise. With the default spread
    they are well separated: any reasonable readout should classify them perfectly."""
    centres = np.random.default_rng(1234).normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * np.random.default_rng(seed).normal(size=(len(y), dim))
    return x.astype(np.float32), y.astype(np.int64)


def identity(x):
    return x


def test_sample_shots_class_balanced_and_deterministic():
    y = np.random.default_rng(0).integers(0, 4, size=400)
    idx = evaluate.sample_shots(y, 7, seed=3)
    assert len(idx) == 28 and len(set(idx.tolist())) == 28
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=4), [7] * 4)
    np.testing.assert_array_equal(idx, evaluate.sample_shots(y, 7, seed=3))
    assert not np.array_equal(idx, evaluate.sample_shots(y, 7, seed=4))


def test_sample_shots_too_few_examples():
    with pytest.raises(ValueError, match="need 3"):
        evaluate.sample_shots(np.array([0, 0, 0, 1, 1]), 3, seed=0)


@pytest.mark.parametrize("readout", ["logistic", "ridge"])
def test_separable_features_score_perfectly(readout):
    x, y = clusters(40)
    xt, yt = clusters(20, seed=1)
    res = evaluate.few_shot_accuracy(identity, x, y, xt, yt, shots=5, seeds=3, readout=readout)
    assert res.mean == 1.0 and res.accuracies == [1.0, 1.0, 1.0]
    assert (res.shots, res.seeds, res.readout) == (5, 3, readout)


@pytest.mark.parametrize("readout", ["logistic", "ridge"])
def test_shuffled_labels_score_chance(readout):
    x, y = clusters(100, classes=4)
    xt, yt = clusters(250, classes=4, seed=1)
    yt = np.random.default_rng(1).permutation(yt)
    res = evaluate.few_shot_accuracy(identity, x, y, xt, yt, shots=10, seeds=4, readout=readout)
    assert abs(res.mean - 0.25) < 0.06


def test_stderr_formula():
    assert math.isclose(evaluate.stderr([0.1, 0.2, 0.4]),
                        np.std([0.1, 0.2, 0.4], ddof=1) / np.sqrt(3))
    assert math.isnan(evaluate.stderr([0.5]))
    x, y = clusters(30, spread=3.0)  # overlapping clusters, so accuracies vary across seeds
    xt, yt = clusters(30, spread=3.0, seed=1)
    res = evaluate.few_shot_accuracy(identity, x, y, xt, yt, shots=3, seeds=5)
    assert len(set(res.accuracies)) > 1
    assert math.isclose(res.stderr, np.std(res.accuracies, ddof=1) / np.sqrt(5))
    assert math.isclose(res.mean, np.mean(res.accuracies))


def test_embeds_labeled_and_test_in_one_call():
    x, y = clusters(20)
    xt, yt = clusters(10, seed=1)
    sizes = []

    def spy(batch):
        sizes.append(len(batch))
        return batch
    evaluate.few_shot_accuracy(spy, x, y, xt, yt, shots=2, seeds=2)
    assert sizes == [10 + len(xt)] * 2


def test_fitted_few_shot_accuracy_fits_each_draw():
    x, y = clusters(20)
    xt, yt = clusters(10, seed=1)
    seen = []

    def fit(x_lab, y_lab, seed):
        seen.append((seed, np.bincount(y_lab).tolist()))
        return identity
    res = evaluate.fitted_few_shot_accuracy(fit, x, y, xt, yt, shots=2, seeds=3)
    assert seen == [(s, [2] * 5) for s in range(3)] and res.mean == 1.0


def test_non_finite_features_raise():
    x, y = clusters(10)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate.few_shot_accuracy(lambda b: b * np.nan, x, y, x, y, shots=2, seeds=1)


def test_unknown_readout():
    x, y = clusters(10)
    with pytest.raises(ValueError, match="unknown readout"):
        evaluate.few_shot_accuracy(identity, x, y, x, y, shots=2, seeds=1, readout="knn")


def test_to_json():
    res = evaluate.EvalResult(shots=10, seeds=2, readout="ridge", mean=0.5, stderr=0.1,
                              accuracies=[0.4, 0.6])
    out = res.to_json(dataset="mnist14", method="pca")
    assert out == {"dataset": "mnist14", "shots": 10, "seeds": 2, "readout": "ridge",
                   "mean": 0.5, "stderr": 0.1, "accuracies": [0.4, 0.6], "method": "pca"}
    single = evaluate.EvalResult(10, 1, "logistic", 0.5, float("nan"), [0.5])
    assert json.loads(json.dumps(single.to_json("mnist14")))["stderr"] is None


def test_model_embed_fn_matches_base_model():
    cfg = BaseModelConfig(input_dim=12, hidden=(16, 16), embedding=8)
    params = base_model.init(jax.random.PRNGKey(0), cfg)
    x = np.random.default_rng(0).random((30, 12), dtype=np.float32)
    out = evaluate.model_embed_fn(params)(x)
    assert isinstance(out, np.ndarray) and out.shape == (30, 8)
    np.testing.assert_allclose(out, base_model.embed(params, x), rtol=1e-5, atol=1e-6)
    assert evaluate.model_embed_fn(params, layer=1)(x).shape == (30, 16)
