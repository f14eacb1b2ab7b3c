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
    """Support (a) and query (b) examples of the few-shot meta-objective; with a leading draws
    axis (D, K, ...) the meta-objective is their mean."""
    x_a: Array  # (K, N^0)
    y_a: Array  # (K, T) one-hot classes, then regression targets
    x_b: Array
    y_b: Array


def step_and_loss(theta: rule.Theta, params: base_model.Params, x: Array, labeled: LabeledBatch,
                  cfg: RuleConfig, activation: str = "relu", l2: float = RIDGE_L2):
    """One application of the rule and the MetaObjective of the state it reaches."""
    params = rule.unsupervised_update(theta, params, x, cfg, activation)
    return params, labeled_objective(params, labeled, activation, l2)


def labeled_objective(params: base_model.Params, labeled: LabeledBatch,
                      activation: str = "relu", l2: float = RIDGE_L2) -> Array:
    """The MetaObjective of params on one support/query draw, or the mean over a leading draws
    axis (App. H.2 averages several)."""
    if labeled.x_a.ndim == 3:
        scores = jax.vmap(lambda *lab: meta_objective(params, *lab, activation=activation,
                                                       l2=l2))(*labeled)
        return jnp.mean(scores)
    return meta_objective(params, *labeled, activation=activation, l2=l2)


def unroll_loss(theta: rule.Theta, params: base_model.Params, batches: Array,
                labeled: LabeledBatch, cfg: RuleConfig, activation: str = "relu",
                l2: float = RIDGE_L2, kept: int = 1):
    """Mean of the MetaObjective over the states phi_1..phi_U of one truncation (Eq. 1).

    All steps but the last `kept` are rematerialised, so the memory of the gradient stays flat
    in U. The last step is not by default: the backward pass starts with it, so recomputing it
    would only repeat the forward pass (3–7 % of the paper preset's outer step); keeping more
    costs more in stored residuals than it saves (docs/performance.md).

    Args:
      batches: (U, B, N^0) unlabeled batches, one per application of the rule.
      labeled: the labeled support/query batches scored after every step.
      kept: how many of the last steps keep their residuals instead of being recomputed.
    Returns:
      (mean meta-objective, (final params, per-step meta-objective (U,))).
    """
    def step(params, x):
        return step_and_loss(theta, params, x, labeled, cfg, activation, l2)

    split = batches.shape[0] - kept
    params, losses = jax.lax.scan(jax.checkpoint(step), params, batches[:split])
    for x in batches[split:]:
        params, last = step(params, x)
        losses = jnp.append(losses, last)
    return jnp.mean(losses), (params, losses)


@partial(jax.jit, static_argnames=("cfg", "activation"))
def meta_grad(theta: rule.Theta, params: base_model.Params, batches: Array,
              labeled: LabeledBatch, cfg: RuleConfig, activation: str = "relu"):
    """Truncated meta-gradient: ((loss, (final params, per-step losses)), d loss / d theta)."""
    return jax.value_and_grad(unroll_loss, has_aux=True)(theta, params, batches, labeled, cfg,
                                                         activation)


# Truncated backprop one step at a time, with a single compilation for every unroll length (which
# matters when U is sampled afresh for each truncation). The forward pass keeps each step's
# pullback -- the residuals of its linearisation -- so that the backward pass only pulls the
# cotangent through; once the kept pullbacks would pass `pullback_bytes`, later steps keep only the
# base-model parameters (small) and the backward pass recomputes them (remat: memory flat in U).

PULLBACK_BYTES = 2 * 2**30  # the default budget for kept pullbacks, per truncation


@partial(jax.jit, static_argnames=("cfg", "activation"))
def forward_step(theta, params, x, cfg: RuleConfig, activation: str = "relu"):
    """phi_t for a batch of tasks: params, x carry a leading task axis; theta is shared."""
    return jax.vmap(lambda p, xb: rule.unsupervised_update(theta, p, xb, cfg, activation))(
        params, x)


@partial(jax.jit, static_argnames=("cfg", "activation"))
def linearize_step(theta, params, x, labeled: LabeledBatch, cfg: RuleConfig,
                   activation: str = "relu"):
    """phi_t, MetaObjective(phi_t) and the step's pullback, for a batch of tasks (leading axis).

    The pullback (a jax.tree_util.Partial holding the residuals) maps the cotangents of
    (phi_t, MetaObjective) to those of (theta, phi_{t-1}); see `pull_back`.
    """
    def one(p, xb, lb):
        (new, loss), pullback = jax.vjp(
            lambda th, pp: step_and_loss(th, pp, xb, lb, cfg, activation), theta, p)
        return new, loss, pullback

    return jax.vmap(one)(params, x, labeled)


@jax.jit
def pull_back(pullback, g_params, weight):
    """(cotangent of phi_{t-1}, d/d theta of each task (leading task axis)) from a kept
    pullback."""
    g_theta, g_prev = jax.vmap(lambda pb, g: pb((g, weight)))(pullback, g_params)
    return g_prev, g_theta


@partial(jax.jit, static_argnames=("cfg", "activation"))
def backward_step(theta, params_prev, x, labeled: LabeledBatch, g_params, weight,
                  cfg: RuleConfig, activation: str = "relu"):
    """Recompute step t and pull the cotangent of phi_t back to phi_{t-1}, adding
    weight * d MetaObjective(phi_t).

    Every argument but theta and weight has a leading task axis.
    Returns (cotangent of phi_{t-1}, d/d theta per task, MetaObjective(phi_t) per task).
    """
    _, losses, pullback = linearize_step(theta, params_prev, x, labeled, cfg, activation)
    return *pull_back(pullback, g_params, weight), losses


def _nbytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(tree))


def truncated_grad(theta, params, batches, labeled: LabeledBatch, cfg: RuleConfig,
                   activation: str = "relu", pullback_bytes: int = PULLBACK_BYTES,
                   per_task: bool = False):
    """Gradient of the mean over tasks and steps of MetaObjective(phi_1..phi_U).

    Args:
      params: base-model parameters with a leading task axis (M, ...).
      batches: (M, U, B, N^0) unlabeled batches.
      labeled: LabeledBatch with a leading task axis.
      pullback_bytes: memory for the steps' kept pullbacks; the steps beyond it are recomputed
        in the backward pass (0: recompute every step but the last, 1: keep only the first
        and the last).
      per_task: return each task's share of the gradient (leading task axis; they sum to it).
    Returns:
      (mean loss, final params, d loss / d theta, per-step losses (U, M)).
    """
    n_tasks, unroll = batches.shape[:2]
    states, pullbacks, losses = [params], [None] * unroll, [None] * unroll
    kept = 0
    keeping = pullback_bytes > 0  # a step's size is known once it is built: the first is kept
    for t in range(unroll):
        # the last step's residuals are pulled back at once: keeping them costs no extra memory
        if keeping or t == unroll - 1:
            params, losses[t], pullbacks[t] = linearize_step(theta, params, batches[:, t],
                                                             labeled, cfg, activation)
            step_bytes = _nbytes(pullbacks[t])
            kept += step_bytes
            keeping = kept + step_bytes <= pullback_bytes
        else:
            params = forward_step(theta, params, batches[:, t], cfg, activation)
        states.append(params)
    weight = jnp.asarray(1.0 / (unroll * n_tasks), batches.dtype)
    g_params = jax.tree_util.tree_map(jnp.zeros_like, params)
    g_theta = jax.tree_util.tree_map(lambda a: jnp.zeros((n_tasks, *a.shape), a.dtype), theta)
    for t in range(unroll - 1, -1, -1):
        if pullbacks[t] is None:
            g_params, g_t, losses[t] = backward_step(theta, states[t], batches[:, t], labeled,
                                                     g_params, weight, cfg, activation)
        else:
            g_params, g_t = pull_back(pullbacks[t], g_params, weight)
            pullbacks[t] = None  # free its residuals as soon as they are used
        g_theta = jax.tree_util.tree_map(jnp.add, g_theta, g_t)
    losses = jnp.stack(losses)
    if not per_task:
        g_theta = jax.tree_util.tree_map(lambda a: jnp.sum(a, 0), g_theta)
    return jnp.mean(losses), states[-1], g_theta, losses
