"""Performance kernels of the learned rule: its circular 1-D convolutions and batch norm + relu,
each with a hand-written gradient (custom VJP).

Mathematically these are plain operations (rule.py states them); they live here because XLA's CPU
backend runs autodiff's version 1.4-1.6x slower, and because on a CPU the wide convolutions use
Winograd's minimal filtering (other backends take the plain stacked product, `winograd_tile`).
tests/test_kernels.py checks each against its plain formulation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metarule import base_model

Array = jax.Array


def circular_neighbours(m: Array, k: int, axis: int) -> Array:
    """The k neighbours of every position along `axis` with circular wrap-around, stacked on the
    channel axis: (B, N, k * C), the one k // 2 before first."""
    half = k // 2
    return jnp.concatenate([m if s == 0 else jnp.roll(m, s, axis=axis)
                            for s in range(half, half - k, -1)], axis=-1)


# Winograd's minimal filtering F(m, 3) (Lavin & Gray, 2016): m outputs of a 3-tap correlation
# y_j = sum_t d_{j+t} w_t from a tile of m + 2 inputs as A^T [(G w) * (B^T d)], with m + 2 channel
# products instead of 3m. Rows: B^T, G, A^T.
WINOGRAD = {
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
         (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
}


def _combine(coeffs, terms):
    """sum_q coeffs[q] * terms[q], skipping zeros (XLA fuses it into one elementwise pass)."""
    out = [c * t if c != 1 else t for c, t in zip(coeffs, terms) if c != 0]
    return functools.reduce(jnp.add, out)


def _tile_positions(m: Array, axis: int, tile: int) -> list[Array]:
    """m (B, N, C) cut into tiles of `tile` along axis: the tile's positions, each (T, N, C) for
    axis 0 or (B, T, C) for axis 1, T = tiles."""
    bsz, n, c = m.shape
    tiles = m.reshape((-1, tile, n, c) if axis == 0 else (bsz, -1, tile, c))
    return [jax.lax.index_in_dim(tiles, i, axis + 1, keepdims=False) for i in range(tile)]


def winograd_input(m: Array, axis: int, tile: int) -> Array:
    """B^T d for every tile d with its circular neighbours: (tile + 2, ..., C)."""
    cols = _tile_positions(m, axis, tile)
    window = [jnp.roll(cols[-1], 1, axis)] + cols + [jnp.roll(cols[0], -1, axis)]
    return jnp.stack([_combine(row, window) for row in WINOGRAD[tile][0]])


def winograd_conv3(m: Array, w: Array, axis: int, tile: int) -> Array:
    """The circular 3-tap convolution of conv1d by Winograd's F(tile, 3): 3 / (1 + 2 / tile) times
    fewer multiplies in the channel products (2x for tile 4); needs m.shape[axis] % tile == 0."""
    _, g, a_t = WINOGRAD[tile]
    bsz, n, c = m.shape
    u = jnp.einsum("pk,kcd->pcd", jnp.asarray(g, w.dtype), w.reshape(3, c, -1))   # G w
    prods = jnp.einsum("p...c,pcd->p...d", winograd_input(m, axis, tile), u)
    y = jnp.stack([_combine(row, prods) for row in a_t], axis + 1)               # A^T M
    return y.reshape(bsz, n, -1)


def winograd_weight_grad(m: Array, g: Array, axis: int, tile: int) -> Array:
    """d sum(g * winograd_conv3(m, w)) / dw, with the same saving: (3 * C_in, C_out)."""
    _, g_mat, a_t = WINOGRAD[tile]
    g_cols = _tile_positions(g, axis, tile)
    g_prods = jnp.stack([_combine(col, g_cols) for col in zip(*a_t)])            # A g
    grad_u = jnp.einsum("p...c,p...d->pcd", winograd_input(m, axis, tile), g_prods)
    return jnp.einsum("pk,pcd->kcd", jnp.asarray(g_mat, g.dtype), grad_u).reshape(-1, g.shape[-1])


# Below this many channel pairs (C_in * C_out) the products are too thin for the saving to show:
# the `cpu` preset's 16-channel convolutions ran 0.94-1.0x as fast (docs/performance.md).
WINOGRAD_MIN_CHANNELS = 32 * 32


def winograd_tile(length: int, w_shape: tuple[int, int], c_in: int) -> int | None:
    """The largest Winograd tile that divides the convolved axis, for 3-tap convolutions wide
    enough to gain on a CPU; None for the stacked product.

    Only on a CPU: there the multiplies bound the time, while a GPU's matrix units run the one
    stacked product faster than Winograd's many thin ones and its elementwise transforms.
    """
    if jax.default_backend() != "cpu":
        return None
    if w_shape[0] != 3 * c_in or c_in * w_shape[1] < WINOGRAD_MIN_CHANNELS:
        return None
    return next((t for t in WINOGRAD if length % t == 0), None)


def circular_conv(m: Array, w: Array, axis: int) -> Array:
    tile = winograd_tile(m.shape[axis], w.shape, m.shape[-1])
    if tile is None:
        return circular_neighbours(m, w.shape[0] // m.shape[-1], axis) @ w
    return winograd_conv3(m, w, axis, tile)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv1d(m: Array, w: Array, axis: int) -> Array:
    """1-D convolution of m (B, N, C_in) along `axis` (0: ConvBatch, 1: ConvUnit) with circular
    padding; w: (K * C_in, C_out) stacks the taps, the one before each position first.

    Circular, because neither axis has edges: batch order is arbitrary and the unit positions are
    sin/cos features on a circle (App.81-82). On a CPU computed by Winograd's F(4, 3) or F(2, 3)
    where the axis length allows and the channels are many, else as one matrix product over stacked
    neighbours. Its gradient is written out below (a custom VJP), so the rule can be
    differentiated in reverse mode only, as everything here does.
    """
    return circular_conv(m, w, axis)


def _conv1d_fwd(m, w, axis):
    return conv1d(m, w, axis), (m, w)


def _conv1d_bwd(axis, residuals, g):
    """The gradient written out: autodiff's way (a (B*N, H) x (H, K*C) product, then rolling and
    summing its K slices) costs XLA's CPU backend 1.4-1.6x as much.

    The adjoint of a circular convolution is the circular convolution with the taps reversed and
    each tap transposed, so the input gradient is computed as the forward is.
    """
    m, w = residuals
    c = m.shape[-1]
    k = w.shape[0] // c
    w_adjoint = jnp.swapaxes(w.reshape(k, c, -1)[::-1], 1, 2).reshape(-1, c)
    tile = winograd_tile(m.shape[axis], w.shape, c)
    if tile is None:
        grad_w = jnp.einsum("bnk,bnh->kh", circular_neighbours(m, k, axis), g)
    else:
        grad_w = winograd_weight_grad(m, g, axis, tile)
    return circular_conv(g, w_adjoint, axis), grad_w


conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)


def batch_norm(m: Array, eps: float) -> Array:
    """BatchNorm(m, [0, 1]): per channel over the batch and unit axes, no learned affine."""
    return base_model.batch_norm(m, axes=(0, 1), eps=eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def bn_relu(m: Array, eps: float) -> Array:
    """relu(batch_norm(m)), with its gradient written out below."""
    return jax.nn.relu(batch_norm(m, eps))


def _bn_relu_fwd(m, eps):
    mean = jnp.mean(m, axis=(0, 1), keepdims=True)
    r = jax.lax.rsqrt(jnp.mean(jnp.square(m - mean), axis=(0, 1), keepdims=True) + eps)
    y = (m - mean) * r
    return jax.nn.relu(y), (y, r)


def _bn_relu_bwd(eps, residuals, g):
    """dm = r (g' - E[g'] - y E[g' y]) with g' = g [y > 0]: two reductions and one pass, where
    autodiff of the mean and variance takes several (the batch norms are ~a quarter of a step)."""
    y, r = residuals
    g = jnp.where(y > 0, g, 0)
    return (r * (g - jnp.mean(g, axis=(0, 1), keepdims=True)
                 - y * jnp.mean(g * y, axis=(0, 1), keepdims=True)),)


bn_relu.defvjp(_bn_relu_fwd, _bn_relu_bwd)
