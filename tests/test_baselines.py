import numpy as np
import pytest

from metarule import baselines, base_model


def blobs(n_per_class, classes=4, dim=16, seed=0):
    """Class-dependent pixel patterns in [0, 1] with noise."""
    rng = np.random.default_rng(seed)
    templates = rng.random((classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = np.clip(templates[y] + 0.1 * rng.normal(size=(len(y), dim)), 0, 1)
    return x.astype(np.float32), y.astype(np.int64)


def test_random_init_embedding():
    x, _ = blobs(10)
    a = baselines.random_init(16, seed=0, widths=(32, 32))
    u = a.embed_fn(x)
    assert u.shape == (40, 32) and np.all(np.isfinite(u)) and np.all(u >= 0)  # post-relu
    np.testing.assert_array_equal(u, baselines.random_init(16, seed=0, widths=(32, 32)).embed_fn(x))
    assert not np.allclose(u, baselines.random_init(16, seed=1, widths=(32, 32)).embed_fn(x))
    assert a.losses.size == 0


def principal_angles(a, b):
    """Principal angles (radians) between the column spans of a and b."""
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    return np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1))


def test_pca_embedding_is_the_principal_subspace():
    """The embedding is x - mean projected on the top-5 principal directions: the same subspace
    as the top right singular vectors of the centred data and as scikit-learn's PCA."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)  # a clear spectrum: 5 strong directions, then noise
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    x = (rng.normal(size=(400, 16)) * np.r_[[5.0, 4, 3, 2.5, 2], np.full(11, 0.3)]) @ basis.T
    x = (x + 7.0).astype(np.float32)
    p = baselines.pca(x, n_components=5, seed=0)
    mean = x.mean(0)
    linear = p.embed_fn(mean + np.eye(16, dtype=np.float32)) - p.embed_fn(mean[None])  # (16, 5)
    np.testing.assert_allclose(p.embed_fn(mean[None]), 0, atol=1e-4)  # centred on the data mean
    top = np.linalg.svd(x - mean, full_matrices=False)[2][:5].T
    assert principal_angles(linear, top).max() < 1e-3
    sk = PCA(n_components=5).fit(x).components_.T
    assert principal_angles(linear, sk).max() < 1e-3
    np.testing.assert_allclose(np.linalg.norm(linear, axis=0), 1, atol=1e-4)  # a projection
    u = p.embed_fn(x[:7])
    assert u.shape == (7, 5) and u.dtype == np.float32
    np.testing.assert_allclose(u, (x[:7] - mean) @ linear, atol=1e-3)


def test_vae_loss_decreases_and_reports_along_training():
    x, _ = blobs(64)
    calls = []
    v = baselines.vae(x, steps=300, seed=0, hidden=(32, 32, 32), latent=4, lr=3e-3, batch=64,
                      eval_every=100, callback=lambda step, fn: calls.append((step, fn(x).shape)))
    assert v.losses.shape == (300,) and np.all(np.isfinite(v.losses))
    assert v.losses[-50:].mean() < v.losses[:50].mean() - 1.0
    assert calls == [(s, (256, 4)) for s in (0, 100, 200, 300)]
    u = v.embed_fn(x[:10])
    assert u.shape == (10, 4) and np.all(np.isfinite(u))


def test_supervised_fits_its_labeled_examples():
    x, y = blobs(10, classes=5, seed=1)
    s = baselines.supervised(x, y, steps=300, seed=0, batch=32, widths=(32, 32))
    assert s.losses.shape == (300,) and s.losses[-20:].mean() < 0.1
    logits = base_model.embed(s.params.base, x) @ s.params.head.w + s.params.head.b
    assert np.mean(np.argmax(logits, axis=-1) == y) >= 0.95
    assert s.embed_fn(x).shape == (50, 32)


def test_protonet_learns_intact_episodes():
    x, y = blobs(20, classes=8, dim=32)
    p = baselines.protonet(x, y, steps=200, seed=0, ways=4, shots=2, queries=4, lr=3e-3,
                           hidden=(32, 32, 32))
    assert p.losses.shape == (200,) and p.losses[-20:].mean() < p.losses[:20].mean()
    assert p.embed_fn(x).shape == (160, 32)
    res = p.evaluate(x, y, ways=4, shots=2, queries=4, episodes=10)
    assert res.readout == "prototype" and len(res.accuracies) == 10 and res.mean > 0.9


def test_protonet_shuffled_episodes_end_to_end():
    x, y = blobs(12, classes=6)
    p = baselines.protonet(x, y, steps=20, seed=0, ways=3, shots=2, queries=3, lr=3e-3,
                           hidden=(16, 16, 16), shuffle=True)
    assert p.losses.shape == (20,) and np.all(np.isfinite(p.losses))
    fixed = np.random.default_rng(0).permutation(16)
    wrong = np.random.default_rng(0).permutation(y)
    for kw in ({"permutation": fixed}, {"shuffle": True}):
        # Pixel permutations keep distances, so raw pixels must still classify the blobs
        # perfectly, and scrambled labels must fall to chance (1/3).
        raw = baselines.prototype_accuracy(lambda b: b, x, y, ways=3, shots=2, queries=3,
                                           episodes=5, seed=0, **kw)
        assert raw.accuracies == [1.0] * 5
        scrambled = baselines.prototype_accuracy(lambda b: b, x, wrong, ways=3, shots=2,
                                                 queries=3, episodes=20, seed=0, **kw)
        assert scrambled.mean < 0.45
        # The 20-step network: measured 0.96 (fixed) and 0.76 (shuffled) over these 5 episodes.
        res = p.evaluate(x, y, ways=3, shots=2, queries=3, episodes=5, seed=0, **kw)
        assert len(res.accuracies) == 5 and res.mean > 0.6


def test_prototype_accuracy_needs_enough_classes():
    x, y = blobs(5, classes=3)
    with pytest.raises(ValueError, match="4-way"):
        baselines.prototype_accuracy(lambda b: b, x, y, ways=4, shots=1, queries=1, episodes=1)
