"""The inner loop: T applications of the rule as a jitted lax.scan over unlabeled batches."""
from __future__ import annotations

from functools import partial

import jax

from metarule import base_model, rule
from metarule.config import RuleConfig

Array = jax.Array


@partial(jax.jit, static_argnames=("cfg", "activation"))
def unroll(theta: rule.Theta, params: base_model.Params, batches: Array, cfg: RuleConfig,
           activation: str = "relu") -> base_model.Params:
    """Apply UnsupervisedUpdate once per batch of `batches` (T, B, N^0); the final params."""
    def step(params, x):
        return rule.unsupervised_update(theta, params, x, cfg, activation), None
    return jax.lax.scan(step, params, batches)[0]
