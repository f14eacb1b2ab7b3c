"""The scikit-learn Embedder: sklearn's common checks, a Pipeline on real data, clear errors."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import metarule
from metarule import catalog
from metarule.experiments import common
from metarule.sklearn_api import EXPECTED_FAILED_CHECKS, Embedder

# The untrained rule of the tiny preset compiles in seconds; MNIST has test_demo's shapes.
TINY = {"rule": "untrained", "widths": (8,), "steps": 2, "preset": "tiny"}
MNIST = {"rule": "untrained", "widths": (16, 16), "steps": 2, "preset": "tiny"}


@parametrize_with_checks([Embedder(**TINY)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def fitted():
    x = np.random.default_rng(0).normal(size=(40, 3))
    return Embedder(**TINY).fit(x), x


def test_pipeline_with_logistic_regression_beats_chance():
    ds = common.load("mnist14", 200, 200)
    clf = Pipeline([("emb", Embedder(**MNIST)), ("clf", LogisticRegression(max_iter=1000))])
    clf.fit(ds.x_train, ds.y_train)
    assert clf.named_steps["emb"].rule_name_ == "init:random"
    assert clf.predict(ds.x_test).shape == (200,)
    assert clf.score(ds.x_test, ds.y_test) > 0.3  # chance is 0.1


def test_transform_is_32d_float64_and_order_invariant(fitted):
    emb, x = fitted
    u = emb.transform(x)
    assert u.shape == (40, 32) and u.dtype == np.float64 and np.all(np.isfinite(u))
    perm = np.random.default_rng(1).permutation(40)
    np.testing.assert_array_equal(emb.transform(x[perm]), u[perm])
    assert list(emb.get_feature_names_out()[:2]) == ["embedder0", "embedder1"]


def test_default_rule_is_the_shipped_one():
    x = np.random.default_rng(0).normal(size=(70, 3))
    emb = Embedder(widths=(8,), steps=1).fit(x)
    assert emb.rule_name_ == catalog.default_rule_spec() == catalog.shipped_rules()[0]
    assert emb.get_params()["rule"] is None  # resolved in fit, as scikit-learn expects
    assert metarule.Embedder is Embedder


def test_package_loads_shipped_rules_by_name():
    rule = metarule.load_rule(metarule.shipped_rules()[0])
    assert rule.card["meta_trained"] and rule.name == metarule.shipped_rules()[0]


def test_accepts_a_loaded_rule():
    x = np.random.default_rng(0).normal(size=(40, 3))
    emb = Embedder(rule=catalog.load_rule("init:oja", preset="tiny"), widths=(8,), steps=2)
    assert emb.fit(x).rule_name_ == "init:oja"


@pytest.mark.parametrize("bad,message", [
    (np.zeros(5), "Expected 2D array"),
    (np.array([[0.0, 1.0, np.nan]] * 4), "NaN"),
    (np.zeros((1, 3)), "minimum of 2 is required"),
])
def test_fit_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        Embedder(**TINY).fit(bad)


@pytest.mark.parametrize("bad,message", [
    (np.zeros(3), "Expected 2D array"),
    (np.array([[0.0, 1.0, np.inf]] * 4), "infinity"),
    (np.zeros((1, 3)), "needs at least 2 samples.*batch norm"),
    (np.zeros((4, 5)), "X has 5 features, but Embedder is expecting 3"),
])
def test_transform_rejects_bad_input(fitted, bad, message):
    with pytest.raises(ValueError, match=message):
        fitted[0].transform(bad)
