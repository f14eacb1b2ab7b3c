"""The base model f(x; phi) of App. G.2: an MLP with batch norm, forward weights W, biases b and
backward weights V for every layer.

Layer l (1..L) maps x^{l-1} (B, N^{l-1}) to z^l = BatchNorm(x^{l-1} W^l) + b^l and
x^l = act(z^l) (App.14-15). W^l and V^l have shape (N^{l-1}, N^l); V^l carries the top-down
signal from layer l to layer l-1 (App.34).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metarule.config import ACTIVATIONS, BaseModelConfig, ConfigError

Array = jax.Array


class Layer(NamedTuple):
    w: Array  # (N^{l-1}, N^l) forward weights
    b: Array  # (N^l,) bias, added after batch norm
    v: Array  # (N^{l-1}, N^l) backward weights


class Params(NamedTuple):
    layers: tuple[Layer, ...]
    perm: Array | None  # fixed input permutation, or None


class Activations(NamedTuple):
    xs: tuple[Array, ...]  # x^0 .. x^L, each (B, N^l)
    zs: tuple[Array, ...]  # z^1 .. z^L, each (B, N^l)


# In the order of config.ACTIVATIONS, which names them.
ACTIVATION_FNS = dict(zip(ACTIVATIONS, (
    jax.nn.relu,
    lambda z: jax.nn.leaky_relu(z, 0.1),
    jax.nn.swish,
    jnp.tanh,
    jax.nn.sigmoid,
    jax.nn.elu,
    jax.nn.softplus,
    lambda z: (z > 0).astype(z.dtype),  # step
    lambda z: z,                        # identity
), strict=True))


def activation_fn(name: str):
    if name not in ACTIVATION_FNS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATION_FNS[name]


def init(key: Array, cfg: BaseModelConfig, dtype=jnp.float32) -> Params:
    """W, V ~ N(0, w_init_std^2), b ~ N(0, b_init_std^2); V is drawn independently of W."""
    widths = cfg.widths
    keys = jax.random.split(key, 3 * (len(widths) - 1) + 1)
    layers = []
    for l, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        kw, kb, kv = keys[3 * l: 3 * l + 3]
        layers.append(Layer(
            w=cfg.w_init_std * jax.random.normal(kw, (n_in, n_out), dtype),
            b=cfg.b_init_std * jax.random.normal(kb, (n_out,), dtype),
            v=cfg.w_init_std * jax.random.normal(kv, (n_in, n_out), dtype)))
    perm = jax.random.permutation(keys[-1], cfg.input_dim) if cfg.permute_inputs else None
    return Params(tuple(layers), perm)


# Small against the variance of x W at the authors' init (std 0.01 weights give ~1e-3), so that the
# base model stays invariant to the weight scale.
BN_EPS = 1e-8


class NormStats(NamedTuple):
    """Fixed batch-norm statistics: per layer, the mean and variance of x^{l-1} W^l over a
    reference set (inference-mode batch norm, as a network with running averages uses)."""
    mean: tuple[Array, ...]  # (N^l,) per layer
    var: tuple[Array, ...]   # (N^l,) per layer


def normalize(x: Array, mean: Array, var: Array, eps: float = BN_EPS) -> Array:
    return (x - mean) * jax.lax.rsqrt(var + eps)


def moments(x: Array, axes=(0,)) -> tuple[Array, Array]:
    mean = jnp.mean(x, axis=axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)


def batch_norm(x: Array, axes=(0,), eps: float = BN_EPS) -> Array:
    """Normalise with batch statistics, no learned scale or offset."""
    return normalize(x, *moments(x, axes), eps)


def _forward(params: Params, x: Array, activation: str,
             stats: NormStats | None) -> tuple[Activations, NormStats]:
    """The forward pass, normalising with `stats` or, if None, with each batch's own moments;
    returns the activations and the statistics used."""
    if x.ndim != 2:
        raise ValueError(f"base model input must be 2-D (batch, features), got shape {x.shape}")
    if stats is None and x.shape[0] < 2:
        raise ValueError("batch norm needs a batch of at least 2 examples, got 1")
    act = activation_fn(activation)
    if params.perm is not None:
        x = x[:, params.perm]
    xs, zs, means, variances = [x], [], [], []
    for l, layer in enumerate(params.layers):
        y = xs[-1] @ layer.w
        mean, var = moments(y) if stats is None else (stats.mean[l], stats.var[l])
        z = normalize(y, mean, var) + layer.b  # App.14
        zs.append(z)
        xs.append(act(z))  # App.15
        means.append(jnp.reshape(mean, (-1,)))
        variances.append(jnp.reshape(var, (-1,)))
    return Activations(tuple(xs), tuple(zs)), NormStats(tuple(means), tuple(variances))


def apply(params: Params, x: Array, activation: str = "relu",
          stats: NormStats | None = None) -> Activations:
    """f(x; phi) of App.16: every pre- and post-activation, x^0 = (permuted) input.

    Batch norm uses the statistics of x itself (the paper's, and the rule's, training mode: needs
    at least 2 rows), or the fixed `stats` (inference mode: every row maps independently).
    """
    return _forward(params, x, activation, stats)[0]


def norm_stats(params: Params, x: Array, activation: str = "relu") -> NormStats:
    """The batch-norm statistics of x, layer by layer: with them, `apply(..., stats=)` maps x as
    `apply` in batch mode does (to round-off), and maps any other rows the same way."""
    return _forward(params, x, activation, None)[1]


def embed(params: Params, x: Array, activation: str = "relu",
          stats: NormStats | None = None) -> Array:
    """f-hat(x; phi) of App.17: the final hidden state x^L."""
    return apply(params, x, activation, stats).xs[-1]
