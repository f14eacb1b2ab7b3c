"""Truncated backprop through unrolls of the rule: the meta-loss of one truncation and its
gradient with respect to theta (Section 4.1, Algorithm 1)."""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metarule import base_model, rule
from metarule.config import RuleConfig
from metarule.meta_objective import RIDGE_L2, meta_objective

Array = jax.Array


class LabeledBatch(NamedTuple):
    """Support (a) and query (b) examples of the few-shot meta-objective."""
    x_a: Array  # (K, N^0)
    y_a: Array  # (K, T) one-hot classes, then regression targets
    x_b: Array
    y_b: Array


def unroll_loss(theta: rule.Theta, params: base_model.Params, batches: Array,
                labeled: LabeledBatch, cfg: RuleConfig, activation: str = "relu",
                l2: float = RIDGE_L2):
    """Mean of the MetaObjective over the states phi_1..phi_U of one truncation (Eq. 1).

    Each step is rematerialised, so the memory of the gradient stays flat in U.

    Args:
      batches: (U, B, N^0) unlabeled batches, one per application of the rule.
      labeled: the labeled support/query batches scored after every step.
    Returns:
      (mean meta-objective, (final params, per-step meta-objective (U,))).
    """
    @jax.checkpoint
    def step(params, x):
        params, _ = rule.unsupervised_update(theta, params, x, cfg, activation)
        return params, meta_objective(params, *labeled, activation=activation, l2=l2)

    params, losses = jax.lax.scan(step, params, batches)
    return jnp.mean(losses), (params, losses)


@partial(jax.jit, static_argnames=("cfg", "activation"))
def meta_grad(theta: rule.Theta, params: base_model.Params, batches: Array,
              labeled: LabeledBatch, cfg: RuleConfig, activation: str = "relu"):
    """Truncated meta-gradient: ((loss, (final params, per-step losses)), d loss / d theta)."""
    return jax.value_and_grad(unroll_loss, has_aux=True)(theta, params, batches, labeled, cfg,
                                                         activation)
