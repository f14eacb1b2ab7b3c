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


def batch_norm(x: Array, axes=(0,), eps: float = BN_EPS) -> Array:
    """Normalise with batch statistics, no learned scale or offset."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def apply(params: Params, x: Array, activation: str = "relu") -> Activations:
    """f(x; phi) of App.16: every pre- and post-activation, x^0 = (permuted) input."""
    if x.ndim != 2:
        raise ValueError(f"base model input must be 2-D (batch, features), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError("batch norm needs a batch of at least 2 examples, got 1")
    act = activation_fn(activation)
    if params.perm is not None:
        x = x[:, params.perm]
    xs, zs = [x], []
    for layer in params.layers:
        z = batch_norm(xs[-1] @ layer.w) + layer.b  # App.14
        zs.append(z)
        xs.append(act(z))  # App.15
    return Activations(tuple(xs), tuple(zs))


def embed(params: Params, x: Array, activation: str = "relu") -> Array:
    """f-hat(x; phi) of App.17: the final hidden state x^L."""
    return apply(params, x, activation).xs[-1]
