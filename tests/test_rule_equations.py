"""The rule against Appendix G written out in NumPy (tests/paper_reference.py), in float64, on
random inputs: random h, W, x and a theta whose offsets and merge weights are random too, so that
no term can hide behind a zero, a one or a symmetry of its input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import paper_reference as ref
from metarule import base_model, rule
from metarule.config import BaseModelConfig, RuleConfig, preset

TINY = RuleConfig(delta_dims=4, h_size=8, grad_channels=2, top_delta_size=8, inner_batch=16,
                  inner_lr=1e-2)
RTOL, ATOL = 1e-7, 1e-9  # room for the rule's 1e-12 guards against a zero RMS


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def random_theta(cfg, seed=0):
    """init_theta's layout with every entry random: offsets and merge weights included."""
    theta = rule.init_theta(jax.random.PRNGKey(seed), cfg, jnp.float64)
    leaves, tree = jax.tree_util.tree_flatten(theta)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(rng.normal(size=a.shape) / np.sqrt(max(a.shape[0], 1)))
               for a in leaves])


def to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def close(got, want):
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


def test_readout_layout_is_the_documented_one():
    assert [name for name, _, _ in rule.READOUTS] == list(ref.READOUT_ORDER)
    assert set(rule.PLANES) == set(ref.weight_planes(
        np.ones((3, 2)), np.ones((4, 3)), np.ones((4, 2)), np.ones((4, 3, 8)), np.ones((4, 2, 8)),
        to_numpy(random_theta(TINY))))


@pytest.mark.parametrize("shape", [(7, 5), (4, 9)])
def test_each_weight_plane_matches_the_paper(shape):
    """App.43-57 and the three fixed decorrelation planes, plane by plane."""
    rng = np.random.default_rng(1)
    n_lower, n_upper, bsz = *shape, 6
    theta = random_theta(TINY, 1)
    w = rng.normal(size=shape)
    x_lower, x_upper = rng.normal(size=(bsz, n_lower)), rng.normal(size=(bsz, n_upper))
    h_lower = rng.normal(size=(bsz, n_lower, TINY.h_size))
    h_upper = rng.normal(size=(bsz, n_upper, TINY.h_size))
    got = rule.weight_planes(*map(jnp.asarray, (w, x_lower, x_upper, h_lower, h_upper)), theta)
    want = ref.weight_planes(w, x_lower, x_upper, h_lower, h_upper, to_numpy(theta))
    assert got.shape == (len(rule.PLANES), *shape)
    for i, name in enumerate(rule.PLANES):
        assert np.abs(want[name]).max() > 1e-3, name  # every plane is exercised
        np.testing.assert_allclose(np.asarray(got[i]), want[name], rtol=RTOL, atol=ATOL,
                                   err_msg=name)


def test_error_signal_and_propagation_match_the_paper():
    """App.33 (delta), App.34 (times V^T) and App.35 (second moment 1, the whole tensor)."""
    rng = np.random.default_rng(2)
    bsz, n_up, n_down, dd, hs = 5, 6, 4, 3, 8
    d, z = rng.normal(size=(bsz, n_up, dd)), rng.normal(size=(bsz, n_up))
    h, w, b = rng.normal(size=(bsz, n_up, hs)), rng.normal(size=(hs, dd)), rng.normal(size=dd)
    v = rng.normal(size=(n_down, n_up))
    delta = rule.error_signal(jnp.asarray(d), jnp.asarray(z), jnp.asarray(h),
                              {"error_w": jnp.asarray(w), "error_b": jnp.asarray(b)})
    close(delta, ref.error_signal(d, z, h, w, b))
    down = rule.propagate_down(delta, jnp.asarray(v))
    close(down, ref.propagate_down(ref.error_signal(d, z, h, w, b), v))
    assert down.shape == (bsz, n_down, dd)
    np.testing.assert_allclose(np.mean(np.square(down)), 1.0, rtol=1e-12)
    # one global scale: the ratio of two units' signals is that of the unscaled product
    raw = np.einsum("bjd,mj->bmd", np.asarray(delta), v)
    np.testing.assert_allclose(np.asarray(down) / raw, np.full(raw.shape, (down / raw)[0, 0, 0]),
                               rtol=1e-9)


def test_unit_rms_and_weight_stats_match_the_paper():
    w = np.random.default_rng(3).normal(size=(6, 4)) * 0.01
    close(rule.unit_rms(jnp.asarray(w)), ref.rms_normalise(w))
    np.testing.assert_allclose(np.mean(np.square(rule.unit_rms(jnp.asarray(w)))), 1.0, rtol=1e-7)
    for axis in (0, 1):
        close(rule.weight_stats(jnp.asarray(w), axis), ref.weight_stats(w, axis))


def test_top_d_matches_the_paper():
    rng = np.random.default_rng(4)
    theta = random_theta(TINY, 4)
    x = np.maximum(rng.normal(size=(10, 7)), 0)
    got = rule.top_d(jnp.asarray(x), theta, TINY)
    close(got, ref.top_d(x, to_numpy(theta)["top_d"], TINY.bn_eps))
    assert got.shape == (10, 7, TINY.delta_dims)


@pytest.mark.parametrize("cfg", [TINY, preset("cpu")])
def test_compute_h_matches_the_paper(cfg):
    rng = np.random.default_rng(5)
    bsz, n = 8, 6
    theta = random_theta(cfg, 5)
    args = (rng.normal(size=(bsz, n, cfg.delta_dims)), np.maximum(rng.normal(size=(bsz, n)), 0),
            rng.normal(size=(bsz, n)), rng.normal(size=(5, n)), rng.normal(size=(n, 3)),
            rng.normal(size=n))
    got = rule.compute_h(*map(jnp.asarray, args), theta, cfg)
    close(got, ref.compute_h(*args, to_numpy(theta)["compute_h"], cfg.bn_eps))


def _model(hidden=(6, 5), input_dim=7, embedding=4, bsz=8, seed=6, activation="tanh"):
    """Random base-model params (b and V random too) and a batch, as JAX and as NumPy triples.
    Weights of std 0.1 rather than 0.01: the rule's 1e-12 guards shift the latter by ~1e-8."""
    mcfg = BaseModelConfig(input_dim=input_dim, hidden=hidden, embedding=embedding,
                           activation=activation, w_init_std=0.1, b_init_std=0.5)
    params = base_model.init(jax.random.PRNGKey(seed), mcfg, jnp.float64)
    x = np.random.default_rng(seed).uniform(size=(bsz, input_dim))
    layers = [tuple(np.asarray(a) for a in (l.w, l.b, l.v)) for l in params.layers]
    return params, jnp.asarray(x), layers, x


def test_compute_all_h_edges_and_recursion_match_the_paper():
    """h^0..h^L: the input units use W^1's transpose as incoming weights, z^0 = x^0 and b^0 = 0;
    the top units use W^L's transpose as outgoing weights; d flows down through V (App.31-36)."""
    theta = random_theta(TINY, 7)
    params, x, layers, x_np = _model()
    acts = base_model.apply(params, x, "tanh")
    got = rule.compute_all_h(acts, params, theta, TINY)
    xs, zs = ref.forward(layers, x_np, np.tanh)
    want = ref.compute_all_h(xs, zs, layers, to_numpy(theta), TINY.bn_eps)
    assert len(got) == len(want) == 4
    for l, (a, e) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(a), e, rtol=RTOL, atol=ATOL, err_msg=f"h^{l}")


def test_merge_and_final_normalisations_match_the_paper():
    rng = np.random.default_rng(8)
    planes = rng.normal(size=(len(rule.PLANES), 5, 4)) * rng.uniform(0.1, 3, (len(rule.PLANES),
                                                                             1, 1))
    merge = rng.normal(size=len(rule.PLANES))
    theta = {"merge": jnp.asarray(merge)}
    w = rng.normal(size=(5, 4))
    for eps in (1.0, 0.3):
        merged = rule.merge_planes(jnp.asarray(planes), theta, eps)
        close(merged, sum(m * ref.soft_normalise(p, eps) for m, p in zip(merge, planes))
              / len(planes))
        cfg = TINY.replace(norm_eps=eps)
        for ww in (w, -w, w + 5 * np.asarray(merged)):  # the projection active and inactive
            got = rule.final_weight_delta(jnp.asarray(planes), jnp.asarray(ww), theta, cfg)
            close(got, ref.final_weight_delta(planes, ww, merge, eps))
    h = rng.normal(size=(6, 4, TINY.h_size)) + 0.3
    readout = rng.normal(size=TINY.h_size)
    for sign in (1, -1):
        close(rule.bias_delta(jnp.asarray(h), {"bias_readout": jnp.asarray(sign * readout)}, 1.0),
              ref.bias_delta(h, sign * readout, 1.0))


@pytest.mark.parametrize("activation, act", [("tanh", np.tanh),
                                             ("relu", lambda z: np.maximum(z, 0))])
def test_unsupervised_update_matches_the_paper(activation, act):
    """App.1-6 end to end: W, b and V after one step of the rule."""
    theta = random_theta(TINY, 9)
    params, x, layers, x_np = _model(activation=activation, seed=9)
    new = rule.unsupervised_update(theta, params, x, TINY, activation)
    want = ref.unsupervised_update(to_numpy(theta), layers, x_np, TINY, act, rule.PLANES)
    for l, (layer, (w, b, v)) in enumerate(zip(new.layers, want)):
        for name, a, e in (("w", layer.w, w), ("b", layer.b, b), ("v", layer.v, v)):
            np.testing.assert_allclose(np.asarray(a), e, rtol=RTOL, atol=ATOL,
                                       err_msg=f"layer {l + 1} {name}")
