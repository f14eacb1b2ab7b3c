import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import paper_reference as ref

from metarule import base_model, rule, truncated
from metarule.config import ACTIVATIONS, BaseModelConfig, ConfigError, RuleConfig, preset

update = jax.jit(rule.unsupervised_update, static_argnames=("cfg", "activation"))
TINY = RuleConfig(delta_dims=4, h_size=8, grad_channels=2, top_delta_size=8, inner_batch=16,
                  inner_lr=1e-2)


def _setup(input_dim=12, hidden=(10, 6), embedding=5, batch=16, cfg=TINY, activation="relu",
           seed=0, dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    mcfg = BaseModelConfig(input_dim=input_dim, hidden=hidden, embedding=embedding,
                           activation=activation)
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype),
                                    base_model.init(keys[0], mcfg))
    theta = rule.init_theta(keys[1], cfg, dtype)
    x = jax.random.uniform(keys[2], (batch, input_dim), dtype)
    return theta, params, x


def _finite(tree):
    return all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("hidden", [(1,), (3, 1, 2), (1024,), (16,) * 11, ()])
def test_finite_for_any_width_and_depth(hidden):
    theta, params, x = _setup(hidden=hidden)
    new = update(theta, params, x, TINY)
    assert _finite(new)
    assert [l.w.shape for l in new.layers] == [l.w.shape for l in params.layers]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_finite_for_every_activation(activation):
    theta, params, x = _setup(activation=activation)
    new = update(theta, params, x, TINY, activation)
    assert _finite(new)


@pytest.mark.parametrize("batch", [2, 3, 64, 256])
def test_finite_for_any_batch_size(batch):
    theta, params, x = _setup(batch=batch)
    assert _finite(update(theta, params, x, TINY))


def test_paper_preset_at_the_paper_shape_is_finite():
    cfg = preset("paper")
    theta, params, x = _setup(input_dim=196, hidden=(128,) * 4, embedding=32, batch=128, cfg=cfg)
    h = rule.compute_all_h(base_model.apply(params, x), params, theta, cfg)
    assert [a.shape for a in h] == [(128, n, 64) for n in (196, 128, 128, 128, 128, 32)]
    assert _finite(update(theta, params, x, cfg))


def _reference_compute_h(d, x, z, w_in, w_out, b, theta, cfg):
    return ref.compute_h(d, x, z, w_in, w_out, b, theta["compute_h"], cfg.bn_eps, jnp)


def _reference_readouts(h_lower, h_upper, theta):
    return ref.readouts(h_lower, h_upper, theta, jnp)


@pytest.mark.parametrize("cfg", [TINY, preset("cpu")])
def test_compute_h_and_readouts_match_their_plain_formulations(cfg):
    """The optimised computeH and readouts against App.80-104 and App.37-42 written out
    (tests/paper_reference.py), values and gradients, on random inputs."""
    keys = jax.random.split(jax.random.PRNGKey(8), 8)
    bsz, n = 12, 7
    theta = rule.init_theta(keys[0], cfg)
    d = jax.random.normal(keys[1], (bsz, n, cfg.delta_dims))
    x = jax.nn.relu(jax.random.normal(keys[2], (bsz, n)))
    z = jax.random.normal(keys[3], (bsz, n))
    w_in, w_out = jax.random.normal(keys[4], (5, n)), jax.random.normal(keys[5], (n, 3))
    b = jax.random.normal(keys[6], (n,))
    h_lower = jax.random.normal(keys[7], (bsz, 5, cfg.h_size))

    def pipeline(compute_h, readouts):
        def f(theta, d, w_in):
            h = compute_h(d, x, z, w_in, w_out, b, theta, cfg)
            return h, readouts(h_lower, h, theta)
        return f

    args = (theta, d, w_in)
    got, got_vjp = jax.vjp(pipeline(rule.compute_h, rule.readouts), *args)
    want, want_vjp = jax.vjp(pipeline(_reference_compute_h, _reference_readouts), *args)
    for a, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-5)
    cotangent = jax.tree_util.tree_map(lambda a: jax.random.normal(keys[0], a.shape), want)
    for a, e in zip(jax.tree_util.tree_leaves(got_vjp(cotangent)),
                    jax.tree_util.tree_leaves(want_vjp(cotangent))):
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(e))))


def test_no_shrink_projection():  # App.61: the projected step never shrinks W
    key1, key2 = jax.random.split(jax.random.PRNGKey(3))
    w = jax.random.normal(key1, (6, 4))
    for delta in (w, -w, jax.random.normal(key2, (6, 4)), 2 * w + jax.random.normal(key2, (6, 4))):
        out = rule.no_shrink(delta, w)
        tol = 1e-6 * float(jnp.linalg.norm(delta) * jnp.linalg.norm(w))  # float32 rounding
        assert float(jnp.sum(out * w)) <= tol  # W - lr*out moves W outward or tangentially
    noise = jax.random.normal(key2, (6, 4))
    tangent = noise - w * jnp.sum(noise * w) / jnp.sum(w * w)
    inward = -w + 0.1 * tangent  # <inward, w> = -|w|^2: W - lr*inward grows, left unchanged
    np.testing.assert_allclose(rule.no_shrink(inward, w), inward, rtol=1e-5, atol=1e-6)
    # a delta along +W is removed entirely, a tangent one kept
    np.testing.assert_allclose(rule.no_shrink(w + tangent, w), tangent, rtol=1e-4, atol=1e-5)


def test_update_never_shrinks_weights_beyond_decay():
    theta, params, x = _setup()
    theta = dict(theta, merge=jnp.full_like(theta["merge"], 1.0))  # w_hat plane pulls inward
    new = update(theta, params, x, TINY)
    for old, nw in zip(params.layers, new.layers):
        delta = -(nw.w - old.w * (1 - TINY.inner_lr)) / TINY.inner_lr
        assert float(jnp.sum(delta * old.w)) <= 1e-6 * float(jnp.linalg.norm(delta)
                                                            * jnp.linalg.norm(old.w))


def test_bias_constraint():  # App.64: the update never raises the mean bias
    theta, params, x = _setup()
    for sign in (1.0, -1.0):
        th = dict(theta, bias_readout=sign * jnp.abs(theta["bias_readout"]))
        h = jnp.abs(jax.random.normal(jax.random.PRNGKey(4), (16, 10, TINY.h_size)))
        db = rule.bias_delta(h, th, TINY.norm_eps)
        assert float(jnp.mean(db)) >= -1e-6
    # a positive mean is left alone (only soft-normalised)
    th = dict(theta, bias_readout=jnp.abs(theta["bias_readout"]))
    base = jnp.mean(h @ th["bias_readout"], axis=0)
    np.testing.assert_allclose(rule.bias_delta(h, th, 1.0), rule.soft_normalize(base, 1.0),
                               rtol=1e-5)


def test_zero_merge_is_pure_decay_and_v_gets_the_same_update():
    theta, params, x = _setup()
    theta0 = dict(theta, merge=jnp.zeros_like(theta["merge"]),
                  bias_readout=jnp.zeros_like(theta["bias_readout"]))
    new = update(theta0, params, x, TINY)
    for old, nw in zip(params.layers, new.layers):  # App.5-6 with Delta = 0
        np.testing.assert_allclose(nw.w, old.w * (1 - TINY.inner_lr), rtol=1e-6)
        np.testing.assert_allclose(nw.b, old.b * (1 - TINY.inner_lr), rtol=1e-6)
    new = update(theta, params, x, TINY)
    for old, nw in zip(params.layers, new.layers):
        dw = nw.w - old.w * (1 - TINY.inner_lr)
        np.testing.assert_allclose(nw.v - old.v * (1 - TINY.inner_lr), dw, atol=1e-7)


def test_meta_gradient_matches_finite_differences():
    """truncated.meta_grad at the `cpu` preset's rule sizes with a tanh base model (small widths
    and batch keep it fast) against central differences of the meta-loss, in float64."""
    cfg = preset("cpu")
    with jax.enable_x64(True):
        theta, params, _ = _setup(dtype=jnp.float64, seed=1, cfg=cfg, activation="tanh")
        keys = jax.random.split(jax.random.PRNGKey(5), 3)
        batches = jax.random.uniform(keys[0], (3, 16, 12), jnp.float64)
        y = jax.nn.one_hot(jnp.arange(12) % 3, 3, dtype=jnp.float64)
        xs = jax.random.uniform(keys[1], (2, 12, 12), jnp.float64)
        labeled = truncated.LabeledBatch(xs[0], y, xs[1], y)

        def loss(th):  # meta_grad's own value: one compilation serves both sides
            return truncated.meta_grad(th, params, batches, labeled, cfg, "tanh")[0][0]

        _, grad = truncated.meta_grad(theta, params, batches, labeled, cfg, "tanh")
        flat, unravel = ravel_pytree(theta)
        gflat = ravel_pytree(grad)[0]
        rng = np.random.default_rng(0)
        idx = list(rng.choice(flat.size, 8, replace=False))
        idx += list(np.argsort(-np.abs(np.asarray(gflat)))[:4])  # plus the largest entries
        assert float(jnp.max(jnp.abs(gflat))) > 1e-4  # a gradient that is there to check
        eps = 1e-6
        for i in idx:
            e = jnp.zeros_like(flat).at[i].set(eps)
            fd = (loss(unravel(flat + e)) - loss(unravel(flat - e))) / (2 * eps)
            np.testing.assert_allclose(gflat[i], fd, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(inner_batch=1), "inner_batch"),
    (dict(h_size=0), "h_size"),
    (dict(inner_lr=0.0), "inner_lr"),
])
def test_bad_rule_config_raises(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RuleConfig(**kwargs)


def test_unknown_preset_raises():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("pullback_bytes", [0, 1, truncated.PULLBACK_BYTES])  # remat, mixed, kept
def test_stepwise_truncated_gradient_equals_scan_gradient(pullback_bytes):
    theta, params, _ = _setup(seed=2)
    keys = jax.random.split(jax.random.PRNGKey(6), 3)
    batches = jax.random.uniform(keys[0], (2, 3, 16, 12))  # 2 tasks, U = 3
    y = jax.nn.one_hot(jnp.arange(12) % 3, 3)
    xs = jax.random.uniform(keys[1], (2, 2, 12, 12))
    labeled = truncated.LabeledBatch(xs[:, 0], jnp.stack([y, y]), xs[:, 1], jnp.stack([y, y]))
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), params)
    loss, final, grad, _ = truncated.truncated_grad(theta, stacked, batches, labeled, TINY,
                                                    pullback_bytes=pullback_bytes)
    per_task = [truncated.meta_grad(theta, params, batches[i],
                                    jax.tree_util.tree_map(lambda a: a[i], labeled), TINY)
                for i in range(2)]
    np.testing.assert_allclose(loss, np.mean([p[0][0] for p in per_task]), rtol=1e-5)
    mean_grad = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, per_task[0][1], per_task[1][1])
    for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(mean_grad)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(final.layers[0].w[1], per_task[1][0][1][0].layers[0].w, rtol=1e-5)
