import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarule import base_model
from metarule.config import ACTIVATIONS, BaseModelConfig, ConfigError


def test_shapes_and_batch_norm():
    cfg = BaseModelConfig(input_dim=20, hidden=(16, 8), embedding=4)
    params = base_model.init(jax.random.PRNGKey(0), cfg)
    assert [l.w.shape for l in params.layers] == [(20, 16), (16, 8), (8, 4)]
    assert all(l.v.shape == l.w.shape for l in params.layers)
    x = jax.random.uniform(jax.random.PRNGKey(1), (32, 20))
    acts = base_model.apply(params, x)
    assert len(acts.xs) == 4 and len(acts.zs) == 3
    for z, layer in zip(acts.zs, params.layers):  # z = BN(xW) + b: batch mean of z is b
        np.testing.assert_allclose(z.mean(0), layer.b, atol=1e-5)
        np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)


def test_weight_scale_is_irrelevant():
    cfg = BaseModelConfig(input_dim=10, hidden=(8,), embedding=4)
    params = base_model.init(jax.random.PRNGKey(0), cfg)
    scaled = params._replace(layers=tuple(l._replace(w=l.w * 37.0) for l in params.layers))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 10))
    np.testing.assert_allclose(base_model.embed(params, x), base_model.embed(scaled, x),
                               atol=1e-4)


def test_permutation_is_fixed_and_applied():
    cfg = BaseModelConfig(input_dim=10, hidden=(8,), embedding=4, permute_inputs=True)
    params = base_model.init(jax.random.PRNGKey(0), cfg)
    assert sorted(np.asarray(params.perm)) == list(range(10))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 10))
    np.testing.assert_allclose(base_model.apply(params, x).xs[0], x[:, params.perm])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_is_finite(activation):
    cfg = BaseModelConfig(input_dim=12, hidden=(8, 8), activation=activation)
    params = base_model.init(jax.random.PRNGKey(0), cfg)
    out = base_model.embed(params, jax.random.normal(jax.random.PRNGKey(1), (4, 12)), activation)
    assert out.shape == (4, 32) and bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_dim=0), "input_dim"),
    (dict(input_dim=4, hidden=(8, 0)), "widths"),
    (dict(input_dim=4, hidden=(-3,)), "widths"),
    (dict(input_dim=4, embedding=0), "widths"),
    (dict(input_dim=4, activation="gelu"), "unknown activation"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BaseModelConfig(**kwargs)


def test_batch_of_one_raises():
    params = base_model.init(jax.random.PRNGKey(0), BaseModelConfig(input_dim=4, hidden=(3,)))
    with pytest.raises(ValueError, match="batch norm needs a batch"):
        base_model.apply(params, jnp.ones((1, 4)))
