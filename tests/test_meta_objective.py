import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarule import meta_objective as mo


def _one_hot(n, classes):
    return jax.nn.one_hot(jnp.arange(n) % classes, classes)


def test_normalized_targets_are_centred_with_unit_norm():
    y = jnp.concatenate([_one_hot(40, 4), jnp.linspace(-3, 7, 40)[:, None]], axis=1)
    y_hat = mo.normalize_targets(y)
    np.testing.assert_allclose(y_hat.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(jnp.mean(jnp.sum(y_hat ** 2, -1)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("k, f", [(40, 8), (40, 300)])  # K above and below the feature size
def test_ridge_matches_explicit_bias_column(k, f):
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    u = jax.random.normal(key1, (k, f), jnp.float32)
    y = jax.random.normal(key2, (k, 3), jnp.float32)
    coef, intercept = mo.ridge_fit(u, y, 0.1)
    # App.23-25 with an unpenalised bias column, written out directly in float64.
    a = np.concatenate([np.asarray(u, np.float64), np.ones((k, 1))], axis=1)
    reg = 0.1 * np.eye(f + 1)
    reg[-1, -1] = 0.0
    c = np.linalg.lstsq(a.T @ a + reg, a.T @ np.asarray(y, np.float64), rcond=None)[0]
    np.testing.assert_allclose(coef, c[:-1], atol=2e-3)
    np.testing.assert_allclose(intercept, c[-1], atol=2e-3)


def test_perfect_features_score_zero_and_constant_features_score_chance():
    y = _one_hot(50, 5)
    assert float(mo.cosine_ridge_loss(3.0 * y, y, 3.0 * y, y)) < 1e-3
    const = jnp.ones((50, 16))
    np.testing.assert_allclose(mo.cosine_ridge_loss(const, y, const, y), 1.0, atol=1e-3)


def test_invariant_to_feature_scale():
    key1, key2 = jax.random.split(jax.random.PRNGKey(1))
    u_a, u_b = jax.random.normal(key1, (30, 12)), jax.random.normal(key2, (30, 12))
    y = _one_hot(30, 3)
    base = mo.cosine_ridge_loss(u_a, y, u_b, y)
    for scale in (1e-3, 7.0, 1e3):
        np.testing.assert_allclose(mo.cosine_ridge_loss(scale * u_a, y, scale * u_b, y), base,
                                   rtol=1e-3)


def test_gradient_is_finite_for_constant_features():
    y = _one_hot(20, 4)
    g = jax.grad(lambda u: mo.cosine_ridge_loss(u, y, u, y))(jnp.ones((20, 8)))
    assert bool(jnp.isfinite(g).all())
