"""The inner loop: T applications of the rule as a jitted lax.scan over unlabeled batches."""
from __future__ import annotations

from functools import partial

import jax

from metarule import base_model, rule
from metarule.config import RuleConfig

Array = jax.Array


def _step(theta, cfg: RuleConfig, activation: str, params, x):
    params, metrics = rule.unsupervised_update(theta, params, x, cfg, activation)
    return params, metrics


@partial(jax.jit, static_argnames=("cfg", "activation", "remat"))
def unroll(theta: rule.Theta, params: base_model.Params, batches: Array, cfg: RuleConfig,
           activation: str = "relu", remat: bool = False):
    """Apply UnsupervisedUpdate once per batch.

    Args:
      batches: (T, B, N^0) unlabeled data, one batch per step.
      remat: recompute each step's activations in the backward pass, so that the memory of a
        meta-gradient through the unroll stays flat in T.
    Returns:
      (final params, per-step rule.UpdateMetrics stacked over T).
    """
    step = partial(_step, theta, cfg, activation)
    if remat:
        step = jax.checkpoint(step)
    return jax.lax.scan(step, params, batches)
