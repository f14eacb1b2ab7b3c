"""The named classic rules do what they claim, and rules save and load safely."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import subspace_angles

from metarule import base_model, catalog, inner
from metarule.config import BaseModelConfig, RuleConfig

CFG = RuleConfig(delta_dims=4, h_size=8, grad_channels=2, top_delta_size=8, inner_batch=64,
                 inner_lr=0.01)


def _data(dim, spectrum, n=20000, seed=0):
    """Gaussian data with a known principal subspace: the first len(spectrum) columns of q."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scales = np.concatenate([spectrum, np.full(dim - len(spectrum), 0.5)])
    return ((rng.normal(size=(n, dim)) * scales) @ q.T).astype(np.float32), q


def _train(name, x, k, steps=1500, seed=1):
    """A one-layer, linear base model (x -> BN(xW) + b) trained by a named rule."""
    theta = catalog.init_rule(name, CFG, jax.random.PRNGKey(0))
    params = base_model.init(jax.random.PRNGKey(seed),
                             BaseModelConfig(x.shape[1], hidden=(), embedding=k,
                                             activation="identity"))
    idx = np.random.default_rng(seed).integers(0, len(x), size=(steps, CFG.inner_batch))
    params = inner.unroll(theta, params, jnp.asarray(x[idx]), CFG, "identity")
    return params


@pytest.mark.parametrize("name", ["oja", "sanger"])
def test_pca_rules_find_the_principal_subspace(name):
    x, q = _data(16, [5.0, 4.0, 3.0])
    w = np.asarray(_train(name, x, k=3).layers[0].w)
    assert np.degrees(subspace_angles(w, q[:, :3])).max() < 5.0
    # the paper's random start does not
    w_random = np.asarray(_train("random", x, k=3).layers[0].w)
    assert np.degrees(subspace_angles(w_random, q[:, :3])).max() > 30.0


def test_hebbian_decorrelation_decorrelates_units():
    x, _ = _data(16, [5.0, 4.0, 3.0, 2.0])

    def max_off_corr(params):
        c = np.corrcoef(np.asarray(base_model.embed(params, jnp.asarray(x[:4000]), "identity")).T)
        return np.abs(c[~np.eye(len(c), dtype=bool)]).max()

    start = base_model.init(jax.random.PRNGKey(1),
                            BaseModelConfig(16, hidden=(), embedding=4, activation="identity"))
    assert max_off_corr(start) > 0.3
    assert max_off_corr(_train("hebbian-decorrelation", x, k=4)) < 0.1


def test_init_rule_names():
    theta = catalog.init_rule("oja", CFG)
    assert float(jnp.abs(theta["bias_readout"]).sum()) == 0.0
    with pytest.raises(catalog.RuleError, match="unknown initial rule"):
        catalog.init_rule("hopfield", CFG)


def test_save_load_round_trip_and_bad_files(tmp_path):
    theta = catalog.init_rule("oja-learned", CFG)
    catalog.save_rule(tmp_path / "r.npz", theta, CFG, {"name": "mine"})
    loaded = catalog.load_rule(str(tmp_path / "r.npz"))
    assert loaded.cfg == CFG and loaded.name == "mine"
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(loaded.theta)):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(catalog.RuleError, match="cannot read rule file"):
        catalog.load_rule(str(tmp_path / "bad.npz"))
    with pytest.raises(catalog.RuleError, match="unknown rule"):
        catalog.load_rule("no-such-rule")
    nan_theta = dict(theta, merge=theta["merge"] * jnp.nan)
    catalog.save_rule(tmp_path / "nan.npz", nan_theta, CFG, {"name": "nan"})
    with pytest.raises(catalog.RuleError, match="NaN"):
        catalog.load_rule(str(tmp_path / "nan.npz"))


@pytest.mark.parametrize("name", catalog.shipped_rules())
def test_shipped_rules_load_with_a_card(name):
    rule = catalog.load_rule(name)
    assert rule.card["meta_trained"] and rule.card["outer_steps"] > 0
    for key in ("preset", "init", "training_data", "held_out", "command"):
        assert key in rule.card, key
