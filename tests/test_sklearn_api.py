"""The scikit-learn Embedder: sklearn's common checks, row-independent transform, a Pipeline on
real data, pandas output, clear errors."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import metarule
from metarule import catalog, evaluate, sklearn_api
from metarule.experiments import common
from metarule.sklearn_api import TRANSFORM_BLOCK, Embedder

# The untrained rule of the tiny preset compiles in seconds; MNIST has test_demo's shapes.
TINY = {"rule": "untrained", "widths": (8,), "steps": 2, "preset": "tiny"}
MNIST = {"rule": "untrained", "widths": (16, 16), "steps": 2, "preset": "tiny"}


@parametrize_with_checks([Embedder(**TINY)])
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


def test_transform_is_32d_float64_and_maps_rows_independently(fitted):
    emb, x = fitted
    u = emb.transform(x)
    assert u.shape == (40, 32) and u.dtype == np.float64 and np.all(np.isfinite(u))
    perm = np.random.default_rng(1).permutation(40)
    np.testing.assert_allclose(emb.transform(x[perm]), u[perm], atol=1e-5)
    np.testing.assert_allclose(emb.transform(x[:10]), u[:10], atol=1e-5)
    np.testing.assert_allclose(emb.transform(x[7:8]), u[7:8], atol=1e-5)
    new = np.random.default_rng(2).normal(size=(3, 3))  # rows outside the fit data
    both = emb.transform(np.concatenate([new, x]))
    np.testing.assert_allclose(both[3:], u, atol=1e-5)
    np.testing.assert_allclose(both[:3], emb.transform(new), atol=1e-5)


def test_fit_data_embeds_as_in_batch_mode(fitted):
    """The stored statistics are the fit data's own: on it, inference mode is the paper's
    batch-mode forward pass (what `metarule eval` uses)."""
    emb, x = fitted
    batch_mode = evaluate.model_embed_fn(emb.params_, emb.activation)(x)
    np.testing.assert_allclose(emb.transform(x), batch_mode, atol=1e-5)
    assert not np.allclose(emb.transform(x[:5]), evaluate.model_embed_fn(emb.params_)(x[:5]),
                           atol=1e-3)  # batch mode depends on the rows embedded together


def test_transform_spans_several_blocks(fitted):
    emb, _ = fitted
    x = np.random.default_rng(3).normal(size=(TRANSFORM_BLOCK + 5, 3))
    u = emb.transform(x)
    assert u.shape == (TRANSFORM_BLOCK + 5, 32)
    np.testing.assert_allclose(u[-5:], emb.transform(x[-5:]), atol=1e-5)


def test_feature_names_and_pandas_output(fitted):
    pd = pytest.importorskip("pandas")
    emb, x = fitted
    frame = pd.DataFrame(x, columns=["a", "b", "c"], index=range(100, 140))
    pandas_emb = Embedder(**TINY).set_output(transform="pandas")
    out = pandas_emb.fit_transform(frame)
    names = [f"embedder{i}" for i in range(32)]
    assert list(pandas_emb.get_feature_names_out()) == list(emb.get_feature_names_out()) == names
    assert isinstance(out, pd.DataFrame) and list(out.columns) == names
    assert list(out.index) == list(frame.index)
    np.testing.assert_allclose(out.to_numpy(), emb.transform(x), atol=1e-5)


def test_fit_turns_on_the_persistent_compilation_cache(monkeypatch):
    calls = []
    monkeypatch.setattr(sklearn_api, "enable_compilation_cache", lambda: calls.append(True))
    Embedder(**TINY).fit(np.random.default_rng(0).normal(size=(20, 3)))
    assert calls == [True]


def test_default_rule_is_the_shipped_one():
    x = np.random.default_rng(0).normal(size=(70, 3))
    emb = Embedder(widths=(8,), steps=1).fit(x)
    assert emb.rule_name_ == catalog.default_rule_spec() == catalog.DEFAULT_RULE
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
    (np.zeros((4, 5)), "X has 5 features, but Embedder is expecting 3"),
])
def test_transform_rejects_bad_input(fitted, bad, message):
    with pytest.raises(ValueError, match=message):
        fitted[0].transform(bad)
