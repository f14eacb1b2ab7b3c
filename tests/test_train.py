"""Training a base model with a rule, saving, loading and scoring it (tiny shapes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarule import catalog, inner, train
from metarule.experiments import common
from metarule.runtime import all_finite

WIDTHS = (16, 16)  # shared with the other tests' tiny settings, so the inner loop compiles once


@pytest.fixture(scope="module")
def ds():
    return common.load("mnist14", 300, 200)


@pytest.fixture(scope="module")
def rule():
    return catalog.load_rule("init:oja")


@pytest.mark.parametrize("steps,chunk,expected", [(3000, 50, 50), (7, 50, 7), (12, 5, 4),
                                                  (13, 5, 1)])
def test_chunk_size_divides_steps(steps, chunk, expected):
    assert train.chunk_size(steps, chunk) == expected


def test_index_chunks_cover_each_epoch_once():
    chunks = list(train.index_chunks(10, 4, 5, 2, np.random.default_rng(0)))
    assert [c.shape for c in chunks] == [(5, 4), (5, 4)]
    flat = np.concatenate([c.ravel() for c in chunks])
    for epoch in range(4):  # 40 indices = 4 epochs of the 10 examples
        assert sorted(flat[10 * epoch:10 * epoch + 10]) == list(range(10))


def test_train_save_load_evaluate_round_trip(ds, rule, tmp_path):
    seen = []
    params = train.train_base_model(rule, ds.x_train, 4, WIDTHS, permute=True, chunk=2,
                                    progress=False, callback=lambda s, p: seen.append(s))
    assert seen == [0, 2, 4]
    assert all_finite(params) and params.perm is not None
    assert [l.w.shape for l in params.layers] == [(196, 16), (16, 16), (16, 32)]
    record = {"dataset": "mnist14", "steps": 4, "activation": "relu"}
    train.save_model(tmp_path / "m", params, record)
    loaded, loaded_record = train.load_model(tmp_path / "m")
    assert loaded_record == record
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    result = train.evaluate_model(tmp_path / "m", "mnist14", shots=10, seeds=2)
    assert result["dataset"] == "mnist14" and len(result["accuracies"]) == 2
    assert 0.15 < result["mean"] <= 1.0  # well above 10% chance even when barely trained


def test_training_is_seeded(ds, rule):
    a, b = (train.train_base_model(rule, ds.x_train, 2, WIDTHS, seed=1, chunk=2, progress=False)
            for _ in range(2))
    np.testing.assert_array_equal(np.asarray(a.layers[0].w), np.asarray(b.layers[0].w))


def test_diverging_rule_is_reported(ds, rule, monkeypatch):
    # A finite theta that drives the model to NaN (a NaN theta is refused before training:
    # tests/test_rule_inputs.py).
    unroll = inner.unroll
    monkeypatch.setattr(inner, "unroll", lambda *args: jax.tree_util.tree_map(
        lambda p: p * jnp.nan, unroll(*args)))
    with pytest.raises(train.TrainError, match="NaN/inf by inner step 2"):
        train.train_base_model(rule, ds.x_train, 2, WIDTHS, chunk=2, progress=False)


def test_load_model_missing(tmp_path):
    with pytest.raises(train.ModelError, match="no model in"):
        train.load_model(tmp_path / "nothing")


def test_evaluate_model_wrong_input_size(ds, rule, tmp_path):
    params = train.train_base_model(rule, ds.x_train, 0, WIDTHS, progress=False)
    train.save_model(tmp_path, params, {"activation": "relu"})
    with pytest.raises(train.ModelError, match="takes 196 inputs but moons has 2"):
        train.evaluate_model(tmp_path, "moons", seeds=1)
