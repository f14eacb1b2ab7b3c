"""The few-shot ridge-regression MetaObjective (Eq. 2, App. G.3, App.18-28)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metarule import base_model

Array = jax.Array

RIDGE_L2 = 0.1  # lambda_ridge, App.24 and H.2


def normalize_targets(y: Array) -> Array:
    """Centre over examples, then scale to unit mean squared norm (App.21-22)."""
    y_bar = y - jnp.mean(y, axis=0, keepdims=True)
    return y_bar * jax.lax.rsqrt(jnp.mean(jnp.sum(jnp.square(y_bar), axis=-1)) + 1e-12)


def ridge_fit(u: Array, y: Array, l2: float = RIDGE_L2):
    """Closed-form ridge with an unpenalised bias column (App.23-25).

    Solving on support-centred features is exactly the unpenalised bias column, and lets us pick
    the primal (F x F) or the dual (K x K) system, whichever is smaller: K can be below or above
    the feature size, and we always solve, never invert.

    Args:
      u: (K, F) support features.
      y: (K, T) targets.
    Returns:
      (coef (F, T), intercept (T,)).
    """
    mu_u, mu_y = jnp.mean(u, axis=0), jnp.mean(y, axis=0)
    uc, yc = u - mu_u, y - mu_y
    k, f = u.shape
    if f <= k:
        gram = uc.T @ uc + l2 * jnp.eye(f, dtype=u.dtype)
        coef = jnp.linalg.solve(gram, uc.T @ yc)
    else:
        gram = uc @ uc.T + l2 * jnp.eye(k, dtype=u.dtype)
        coef = uc.T @ jnp.linalg.solve(gram, yc)
    return coef, mu_y - mu_u @ coef


def ridge_predict(coef: Array, intercept: Array, u: Array) -> Array:
    return u @ coef + intercept  # App.26


def feature_scale(u: Array) -> Array:
    """Overall RMS of the centred support features: dividing by it makes the objective invariant
    to rescaling the features, which a fixed ridge penalty otherwise is not."""
    return jnp.sqrt(jnp.mean(jnp.square(u - jnp.mean(u, axis=0))) + 1e-12)


def cosine_ridge_loss(u_a: Array, y_a: Array, u_b: Array, y_b: Array,
                      l2: float = RIDGE_L2) -> Array:
    """Fit ridge on (u_a, y_a), predict u_b, compare normalised predictions to y_b (App.21-28).

    Targets are one-hot classes, optionally with real-valued regression targets (augmentation
    parameters) as extra columns.
    """
    scale = feature_scale(u_a)
    u_a, u_b = u_a / scale, u_b / scale
    y_a, y_b = normalize_targets(y_a), normalize_targets(y_b)
    coef, intercept = ridge_fit(u_a, y_a, l2)
    p = ridge_predict(coef, intercept, u_b)
    # Safe row normalisation: a zero prediction stays zero (loss = chance = 1) with finite grads.
    norm_sq = jnp.sum(jnp.square(p), axis=-1, keepdims=True)
    p_hat = p * jax.lax.rsqrt(norm_sq + 1e-12) * (norm_sq > 1e-20)  # App.27
    return jnp.mean(jnp.sum(jnp.square(p_hat - y_b), axis=-1))  # App.28


def meta_objective(params: base_model.Params, x_a: Array, y_a: Array, x_b: Array, y_b: Array,
                   activation: str = "relu", l2: float = RIDGE_L2) -> Array:
    """MetaObjective(x_a, y_a, x_b, y_b, phi) of App.18: embed both batches, score the ridge fit."""
    u_a = base_model.embed(params, x_a, activation)  # App.19
    u_b = base_model.embed(params, x_b, activation)  # App.20
    return cosine_ridge_loss(u_a, y_a, u_b, y_b, l2)
