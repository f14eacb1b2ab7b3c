import jax
import jax.numpy as jnp
import numpy as np
import pytest

import paper_reference as paper
from metarule import kernels


# With 32 channels in and out, lengths of 4k and 2k along the convolved axis take Winograd's F(4, 3)
# and F(2, 3); thin convolutions, other lengths and 5 taps take the stacked product.
@pytest.mark.parametrize("shape, k", [((5, 7, 2), 3), ((16, 9, 6), 5), ((2, 1, 3), 3),
                                      ((3, 2, 4), 5), ((8, 12, 6), 3), ((6, 10, 5), 3),
                                      ((4, 2, 3), 3), ((8, 6, 32), 3)])
@pytest.mark.parametrize("axis", [0, 1])
def test_conv1d_and_its_gradient_are_the_circular_convolutions(shape, k, axis):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    m = jax.random.normal(keys[0], shape)
    w = jax.random.normal(keys[1], (k * shape[-1], shape[-1])) / shape[-1]
    g = jax.random.normal(keys[2], shape)
    out, vjp = jax.vjp(lambda m, w: kernels.conv1d(m, w, axis), m, w)
    ref, ref_vjp = jax.vjp(lambda m, w: paper.conv(m, w, axis, jnp), m, w)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(vjp(g), ref_vjp(g)):  # the hand-written VJP
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("axis", [0, 1])
def test_winograd_is_the_circular_convolution(tile, axis):
    with jax.enable_x64(True):  # exact transforms: equal to float64 round-off
        keys = jax.random.split(jax.random.PRNGKey(1), 2)
        m = jax.random.normal(keys[0], (12, 8, 5), jnp.float64)
        w = jax.random.normal(keys[1], (15, 7), jnp.float64)
        g = jax.random.normal(keys[0], (12, 8, 7), jnp.float64)
        out, vjp = jax.vjp(lambda w: paper.conv(m, w, axis, jnp), w)
        np.testing.assert_allclose(kernels.winograd_conv3(m, w, axis, tile), out,
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(kernels.winograd_weight_grad(m, g, axis, tile), vjp(g)[0],
                                   rtol=1e-12, atol=1e-12)
    wide = (3 * 32, 32)
    assert kernels.winograd_tile(12, wide, 32) == 4 and kernels.winograd_tile(10, wide, 32) == 2
    assert kernels.winograd_tile(9, wide, 32) is None
    assert kernels.winograd_tile(8, (5 * 32, 32), 32) is None      # 5 taps
    assert kernels.winograd_tile(8, (3 * 4, 4), 4) is None         # too thin to gain


def test_bn_relu_gradient_is_autodiffs():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(2), 2)
        m = 3.0 * jax.random.normal(keys[0], (9, 6, 4), jnp.float64) + 1.0
        g = jax.random.normal(keys[1], (9, 6, 4), jnp.float64)
        plain = lambda m: jax.nn.relu(paper.batch_norm(m, 1e-5, jnp))
        out, vjp = jax.vjp(lambda m: kernels.bn_relu(m, 1e-5), m)
        np.testing.assert_allclose(out, plain(m), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(vjp(g)[0], jax.vjp(plain, m)[1](g)[0], rtol=1e-10, atol=1e-12)


def test_other_backends_take_the_plain_convolution(monkeypatch):
    """Winograd pays on a CPU only: under another backend conv1d is the stacked product, with
    the same values and gradients."""
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    m = jax.random.normal(keys[0], (8, 6, 32))
    w = jax.random.normal(keys[1], (3 * 32, 32)) / 32
    g = jax.random.normal(keys[2], (8, 6, 32))
    calls = []
    winograd = kernels.winograd_conv3
    monkeypatch.setattr(kernels, "winograd_conv3", lambda *a: calls.append(a) or winograd(*a))

    def conv_and_grad():
        out, vjp = jax.vjp(lambda m, w: kernels.conv1d(m, w, 0), m, w)
        return out, *vjp(g)

    on_cpu = conv_and_grad()
    assert calls  # the wide convolution takes Winograd's F(4, 3) on a CPU
    calls.clear()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert kernels.winograd_tile(8, w.shape, 32) is None
    on_gpu = conv_and_grad()
    assert not calls
    for got, want in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
