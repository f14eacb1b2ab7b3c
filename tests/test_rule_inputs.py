"""rule.check_inputs: input the rule cannot use is refused with a clear ValueError before any of
the rule's XLA work (a wrong width otherwise fails deep in XLA, a NaN silently spreads)."""
import re

import jax
import numpy as np
import pytest

from metarule import base_model, catalog, inner, rule, train
from metarule.config import BaseModelConfig, preset

CFG = preset("tiny")


@pytest.fixture(scope="module")
def model():
    theta = rule.init_theta(jax.random.PRNGKey(0), CFG)
    params = base_model.init(jax.random.PRNGKey(1), BaseModelConfig(6, hidden=(5,), embedding=4))
    return jax.tree_util.tree_map(np.asarray, (theta, params))


def test_finite_input_of_the_models_width_passes(model):
    theta, params = model
    x = np.random.default_rng(0).normal(size=(CFG.inner_batch, 6)).astype(np.float32)
    rule.check_inputs(theta, params, x)
    rule.check_inputs(theta, params, x[None])  # a leading axis of steps, as inner.unroll takes


@pytest.mark.parametrize("shape", [(16, 7), (16, 5), (6,), ()])
def test_input_of_another_width_or_rank_is_refused(model, shape):
    theta, params = model
    with pytest.raises(ValueError, match=r"takes inputs of 6 features, shaped \(batch, 6\); "
                                         "got an array of shape " + re.escape(str(tuple(shape)))):
        rule.check_inputs(theta, params, np.zeros(shape, np.float32))


@pytest.mark.parametrize("where", ["x", "params", "theta"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_anywhere_is_refused(model, where, bad):
    theta, params = model
    x = np.ones((CFG.inner_batch, 6), np.float32)
    if where == "x":
        x[3, 2] = bad
    elif where == "params":
        params = params._replace(layers=(params.layers[0]._replace(
            b=np.where(np.arange(5) == 4, bad, params.layers[0].b)),))
    else:
        theta = dict(theta, merge=np.where(np.arange(theta["merge"].size) == 0, bad,
                                           theta["merge"]))
    what = {"x": "x", "params": "the base model's parameters", "theta": "theta"}[where]
    with pytest.raises(ValueError, match=f"^{what} holds NaN or inf"):
        rule.check_inputs(theta, params, x)


def test_train_base_model_refuses_nan_data_before_the_rule_runs(model, monkeypatch):
    theta, _ = model
    monkeypatch.setattr(inner, "unroll", lambda *a, **k: pytest.fail("the rule ran"))
    x = np.ones((40, 6), np.float32)
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match="^x holds NaN or inf"):
        train.train_base_model(catalog.Rule(theta, CFG, "r", {}), x, 2, widths=(5,),
                               progress=False)


def test_embedder_refuses_a_rule_whose_theta_is_not_finite(model):
    from metarule.sklearn_api import Embedder

    theta, _ = model
    bad = catalog.Rule(dict(theta, error_b=np.full_like(theta["error_b"], np.inf)), CFG, "bad", {})
    x = np.random.default_rng(0).normal(size=(40, 6))
    with pytest.raises(ValueError, match="^theta holds NaN or inf"):
        Embedder(rule=bad, widths=(5,), steps=2).fit(x)
