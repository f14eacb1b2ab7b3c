"""A researcher's interface to meta-training: truncated unrolls of the rule as pure functions.

In the spirit of learned_optimization's `TruncatedStep`. A task's state (its base model, the rule
steps it has taken and its data key) is made once by `init_task_state` and then advanced one
truncation at a time: `unroll_step` applies the rule U times and returns the mean meta-objective
of the U states it reaches (Eq. 1), and `meta_loss_and_grad` also returns its gradient with
respect to theta, the truncated meta-gradient of Section 4.1. Nothing here keeps state or picks
an optimiser: give the gradient to any optax transformation.

`VectorizedTruncatedStep` does the same for M tasks at once: theta is shared, everything else
carries a leading task axis (vmap with theta unbatched), and the loss and gradient are the means
over tasks. docs/api.md has a complete outer loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metarule import base_model, rule, truncated
from metarule.config import ACTIVATIONS, BaseModelConfig, ConfigError, RuleConfig
from metarule.meta_objective import RIDGE_L2
from metarule.runtime import enable_compilation_cache

Array = jax.Array


class TaskState(NamedTuple):
    """One task between truncations."""
    params: base_model.Params  # the base model phi_t
    inner_step: Array          # shape=(), int32: rule steps applied so far
    key: Array                 # the task's data key; see TruncatedStep.sample_data


class FewShot(NamedTuple):
    """Labeled support and query examples, scored by the meta-objective after every step: a ridge
    fit on the support embeddings predicts the query labels (Eq. 2)."""
    x_support: Array  # (K, N^0)
    y_support: Array  # (K,) integer classes in [0, num_classes)
    x_query: Array    # (K', N^0)
    y_query: Array    # (K',)


def init_task_state(key: Array, model: BaseModelConfig) -> TaskState:
    """A fresh base model of shape `model` at step 0, with its own data key."""
    init_key, data_key = jax.random.split(key)
    return TaskState(base_model.init(init_key, model), jnp.zeros((), jnp.int32), data_key)


class _Unrolls:
    """What both steps derive from their `_losses` (per-task meta-losses and the new state)."""

    def meta_loss(self, theta: rule.Theta, state: TaskState, batches: Array, labeled: FewShot
                  ) -> tuple[Array, TaskState]:
        """(mean meta-objective of the U states reached, averaged over tasks, and the state
        after the truncation). Not jitted, so that it composes with any transformation
        (value_and_grad, vmap, ...).

        Args:
          state: the task's state (VectorizedTruncatedStep: the tasks', stacked).
          batches: (U, B, N^0) unlabeled batches, one per application of the rule
            (VectorizedTruncatedStep: (num_tasks, U, B, N^0)).
          labeled: the labeled examples the meta-objective scores after every step.
        """
        losses, state = self._losses(theta, state, batches, labeled)
        return jnp.mean(losses), state

    @partial(jax.jit, static_argnames=("self",))
    def unroll_step(self, theta: rule.Theta, state: TaskState, batches: Array, labeled: FewShot
                    ) -> tuple[TaskState, Array]:
        """Apply the rule once per batch: (the state after the truncation, the meta-loss: a
        scalar, or one per task (num_tasks,) for VectorizedTruncatedStep)."""
        losses, state = self._losses(theta, state, batches, labeled)
        return state, losses

    @partial(jax.jit, static_argnames=("self",))
    def meta_loss_and_grad(self, theta: rule.Theta, state: TaskState, batches: Array,
                           labeled: FewShot) -> tuple[tuple[Array, TaskState], rule.Theta]:
        """((meta-loss, state after the truncation), d meta-loss / d theta)."""
        return jax.value_and_grad(self.meta_loss, has_aux=True)(theta, state, batches, labeled)


@dataclass(frozen=True, kw_only=True)
class TruncatedStep(_Unrolls):
    """Truncated unrolls of the learned rule on one task.

    Attributes:
      rule: the rule's hyper-parameters (a preset, e.g. `metarule.preset("cpu")`); they must be
        the ones theta was made for.
      num_classes: the classes of the labeled examples; labels are one-hot encoded to this width.
      activation: the base model's activation.
      l2: the ridge penalty of the meta-objective.
      kept: the last steps of a truncation that keep their residuals for the backward pass
        instead of being recomputed (truncated.unroll_loss). 0 puts every step in one
        rematerialised scan: the program holds one copy of the rule's step and compiles ~30 %
        faster (docs/api.md); 1 saves recomputing the last step's forward pass (3-7 % of a
        paper-preset meta-gradient).
    """
    rule: RuleConfig
    num_classes: int
    activation: str = "relu"
    l2: float = RIDGE_L2
    kept: int = 0

    def __post_init__(self):
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of "
                              f"{', '.join(ACTIVATIONS)}")
        if self.l2 <= 0:
            raise ConfigError(f"l2 must be > 0, got {self.l2}")
        if self.kept < 0:
            raise ConfigError(f"kept must be >= 0, got {self.kept}")
        enable_compilation_cache()  # a second process reads the compiled step from disk

    @partial(jax.jit, static_argnames=("self", "unroll", "shots"))
    def sample_data(self, state: TaskState, x: Array, y: Array, *, unroll: int, shots: int
                    ) -> tuple[Array, FewShot]:
        """The data of the task's next truncation, drawn from (x, y) by the key
        fold_in(state.key, state.inner_step): a pure function of the state.

        Args:
          x: (N, N^0) examples of a training split (pass a jax array: a numpy one is copied to
            the device on every call).
          y: (N,) their integer classes, used for the labeled examples only.
          unroll: U, the rule steps of the truncation.
          shots: labeled examples per class in the support set and in the query set.
        Returns:
          (U, rule.inner_batch, N^0) unlabeled batches, drawn with replacement, and a FewShot of
          shots * num_classes support and as many disjoint query examples, class-balanced
          (a class with fewer than 2 * shots examples lends its places to others).
        """
        if x.ndim != 2 or y.shape != x.shape[:1]:
            raise ValueError(f"x must be (N, features) and y (N,), got {x.shape} and {y.shape}")
        if unroll < 1 or shots < 1:
            raise ValueError(f"unroll and shots must be >= 1, got {unroll} and {shots}")
        k_batch, k_labeled = jax.random.split(jax.random.fold_in(state.key, state.inner_step))
        batches = x[jax.random.randint(k_batch, (unroll, self.rule.inner_batch), 0, len(x))]
        # 2 * shots rows of each class at random (top_k of random scores, the class's rows
        # first), in round-robin order over the classes: the halves are disjoint and balanced.
        score = jax.random.uniform(k_labeled, y.shape)
        rows = jax.vmap(lambda c: jax.lax.top_k(jnp.where(y == c, score, score - 2.0),
                                                2 * shots)[1])(jnp.arange(self.num_classes))
        support, query = rows[:, :shots].T.ravel(), rows[:, shots:].T.ravel()
        return batches, FewShot(x[support], y[support], x[query], y[query])

    def _losses(self, theta, state, batches, labeled):
        if self.kept > len(batches):
            raise ValueError(f"kept={self.kept} is more than the truncation's {len(batches)} "
                             f"steps; lower kept")
        onehot = partial(jax.nn.one_hot, num_classes=self.num_classes, dtype=batches.dtype)
        targets = truncated.LabeledBatch(labeled.x_support, onehot(labeled.y_support),
                                         labeled.x_query, onehot(labeled.y_query))
        loss, (params, _) = truncated.unroll_loss(theta, state.params, batches, targets,
                                                  self.rule, self.activation, self.l2,
                                                  self.kept)
        return loss, state._replace(params=params, inner_step=state.inner_step + len(batches))


@dataclass(frozen=True, kw_only=True)
class VectorizedTruncatedStep(_Unrolls):
    """`step` on `num_tasks` tasks at once: theta is shared, the states, batches and labeled
    examples carry a leading task axis of length num_tasks; losses and gradients are the means
    over tasks (so they do not scale with num_tasks)."""
    step: TruncatedStep
    num_tasks: int

    def __post_init__(self):
        if self.num_tasks < 1:
            raise ConfigError(f"num_tasks must be >= 1, got {self.num_tasks}")

    def init_step_state(self, key: Array, model: BaseModelConfig) -> TaskState:
        """num_tasks fresh tasks of one base-model shape, each with its own init and data key."""
        return jax.vmap(lambda k: init_task_state(k, model))(
            jax.random.split(key, self.num_tasks))

    @partial(jax.jit, static_argnames=("self", "unroll", "shots"))
    def sample_data(self, states: TaskState, x: Array, y: Array, *, unroll: int, shots: int
                    ) -> tuple[Array, FewShot]:
        """TruncatedStep.sample_data for every task, all from the same (x, y)."""
        return jax.vmap(lambda s: self.step.sample_data(s, x, y, unroll=unroll, shots=shots))(
            states)

    def _losses(self, theta, states, batches, labeled):
        if len(batches) != self.num_tasks:
            raise ValueError(f"batches have {len(batches)} tasks on their leading axis, the "
                             f"step was made for num_tasks={self.num_tasks}")
        return jax.vmap(self.step._losses, in_axes=(None, 0, 0, 0))(theta, states, batches,
                                                                    labeled)
