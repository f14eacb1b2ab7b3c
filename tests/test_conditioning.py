"""Conditioning of truncated backprop's step: relative steps, per-task clipping, the weight of
the augmentation targets and several support/query draws."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metarule import cli, outer, truncated
from metarule.config import ConfigError
from metarule.meta_objective import meta_objective
from metarule.tasks import AUG_TARGETS
from test_outer import TINY


def _group(cfg):
    sampler = outer.TaskSampler(outer.task_config(cfg), 0)
    state, group = outer.init_state(cfg, sampler)
    return state, group


def test_per_task_gradients_sum_to_the_gradient_of_the_mean():
    cfg = outer.MetaTrainConfig(**TINY)
    state, group = _group(cfg)
    batches, labeled = outer.step_data(group, cfg, 0, 3)
    _, _, total, _ = truncated.truncated_grad(state.theta, state.params, batches, labeled,
                                              cfg.rule_cfg)
    _, _, each, _ = truncated.truncated_grad(state.theta, state.params, batches, labeled,
                                             cfg.rule_cfg, per_task=True)
    for t, e in zip(jax.tree_util.tree_leaves(total), jax.tree_util.tree_leaves(each)):
        assert e.shape == (cfg.tasks_per_step, *t.shape)
        np.testing.assert_allclose(e.sum(0), t, rtol=1e-5, atol=1e-9)


def test_task_clip_bounds_each_task_and_leaves_small_gradients_alone():
    state, group = _group(outer.MetaTrainConfig(**TINY))
    cfg = outer.MetaTrainConfig(**TINY)
    batches, labeled = outer.step_data(group, cfg, 0, 3)
    _, _, each, _ = truncated.truncated_grad(state.theta, state.params, batches, labeled,
                                             cfg.rule_cfg, per_task=True)
    m = cfg.tasks_per_step
    norms = np.array([float(optax.tree.norm(jax.tree_util.tree_map(lambda g: m * g[i], each)))
                      for i in range(m)])
    loose = outer.MetaTrainConfig(**{**TINY, "task_clip": 10 * norms.max()})
    tight = outer.MetaTrainConfig(**{**TINY, "task_clip": 0.5 * norms.min()})
    _, _, plain = outer.group_gradient(state.theta, state.params, batches, labeled, cfg, "relu")
    _, _, same = outer.group_gradient(state.theta, state.params, batches, labeled, loose, "relu")
    _, _, clipped = outer.group_gradient(state.theta, state.params, batches, labeled, tight,
                                         "relu")
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(same)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    # every task clipped to c: the mean is sum_i (c / |m g_i|) g_i, with norm <= c
    expected = jax.tree_util.tree_map(
        lambda g: sum(tight.task_clip / norms[i] * g[i] for i in range(m)), each)
    for a, b in zip(jax.tree_util.tree_leaves(clipped), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)
    assert float(optax.tree.norm(clipped)) <= tight.task_clip * (1 + 1e-5)


def test_relative_steps_move_every_leaf_by_the_same_fraction_of_its_size():
    theta = {"merge": jnp.full((13,), 13.0), "conv": jnp.full((48, 16), 0.15)}
    grad = jax.tree_util.tree_map(jnp.ones_like, theta)
    lr = 1e-3
    for relative in (False, True):
        cfg = outer.MetaTrainConfig(**{**TINY, "lr_values": (lr, lr, lr),
                                       "lr_boundaries": (10, 20), "relative_steps": relative})
        opt = outer.optimizer(cfg)
        updates, _ = opt.update(grad, opt.init(theta), theta)
        moved = {k: float(jnp.abs(updates[k]).mean() / jnp.abs(theta[k]).mean()) for k in theta}
        if relative:  # Adam's first step is lr per coordinate; times each leaf's RMS
            assert moved["merge"] == pytest.approx(lr, rel=1e-3)
            assert moved["conv"] == pytest.approx(lr, rel=1e-3)
        else:
            assert moved["conv"] / moved["merge"] == pytest.approx(13.0 / 0.15, rel=1e-3)


def test_aug_weight_scales_only_the_augmentation_targets():
    cfg = outer.MetaTrainConfig(**TINY)
    half = outer.MetaTrainConfig(**{**TINY, "aug_weight": 0.5})
    sampler = outer.TaskSampler(outer.task_config(cfg), 0)
    task = next(t for t in (sampler.sample(rng=np.random.default_rng(i)) for i in range(50))
                if t.augmented)
    a = outer.fixed_size_labeled(task, np.random.default_rng(1), cfg)
    b = outer.fixed_size_labeled(task, np.random.default_rng(1), half)
    n_aug = len(AUG_TARGETS)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][:, :-n_aug], b[1][:, :-n_aug])
    np.testing.assert_allclose(b[1][:, -n_aug:], 0.5 * a[1][:, -n_aug:])
    assert np.abs(a[1][:, -n_aug:]).max() > 0


def test_draws_average_the_meta_objective_over_support_query_draws():
    cfg = outer.MetaTrainConfig(**{**TINY, "draws": 3})
    state, group = _group(cfg)
    batches, labeled = outer.step_data(group, cfg, 0, 2)
    assert labeled.x_a.shape[:2] == (cfg.tasks_per_step, 3)
    params = jax.tree_util.tree_map(lambda p: p[0], state.params)
    one = truncated.LabeledBatch(*(a[0] for a in labeled))
    new, loss = truncated.step_and_loss(state.theta, params, batches[0, 0], one, cfg.rule_cfg)
    each = [meta_objective(new, *(a[d] for a in one)) for d in range(3)]
    np.testing.assert_allclose(loss, np.mean(each), rtol=1e-6)
    assert np.std(each) > 0  # the draws differ


def test_conditioning_flags_reach_the_config_and_are_checked():
    args = cli.build_parser().parse_args(
        ["meta-train", "--relative-steps", "--task-clip", "1", "--aug-weight", "0.5",
         "--draws", "5", "--out", "r"])
    cfg, _ = cli.meta_train_config(args)
    assert (cfg.relative_steps, cfg.task_clip, cfg.aug_weight, cfg.draws) == (True, 1.0, 0.5, 5)
    plain, _ = cli.meta_train_config(cli.build_parser().parse_args(["meta-train"]))
    assert (plain.relative_steps, plain.task_clip, plain.aug_weight, plain.draws) == \
        (False, 0.0, 1.0, 1)
    with pytest.raises(ConfigError, match="aug_weight"):
        outer.MetaTrainConfig(**{**TINY, "aug_weight": -1.0})
    bad = cli.build_parser().parse_args(["meta-train", "--estimator", "es", "--relative-steps"])
    with pytest.raises(ConfigError, match="--relative-steps"):
        cli.es_config(bad, cli.meta_train_config(bad)[0])
