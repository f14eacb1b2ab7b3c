"""metarule.meta: the documented example runs, task vectorisation, gradients, data, errors."""
import re
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from metarule import data, meta, rule, truncated
from metarule.config import BaseModelConfig, ConfigError, preset

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
# One size for every test below, so the compiled programs are shared between tests.
TINY = dict(rule_preset="tiny", hidden=(8,), tasks=2, unroll=2, shots=2)


@pytest.fixture(scope="module")
def mnist():
    ds = data.load("mnist14")
    return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train), ds


@pytest.fixture(scope="module")
def tasks(mnist):
    """A vectorised step on two tasks, their states after one truncation, and the next data."""
    x, y, ds = mnist
    cfg = preset(TINY["rule_preset"])
    step = meta.VectorizedTruncatedStep(
        step=meta.TruncatedStep(rule=cfg, num_classes=ds.num_classes), num_tasks=TINY["tasks"])
    theta = rule.init_theta(jax.random.PRNGKey(0), cfg)
    states = step.init_step_state(jax.random.PRNGKey(1),
                                  BaseModelConfig(ds.input_dim, hidden=TINY["hidden"]))
    draw = dict(unroll=TINY["unroll"], shots=TINY["shots"])
    states, _ = step.unroll_step(theta, states, *step.sample_data(states, x, y, **draw))
    return step, theta, states, step.sample_data(states, x, y, **draw)


def _task(i, tree):
    """Task i's slice of a pytree with a leading task axis."""
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_documented_outer_loop_runs_and_is_deterministic():
    code = _example_code()
    assert len(code.splitlines()) <= 25
    namespace = {"__name__": "api_example"}  # the example's __main__ part (full size) stays off
    exec(compile(code, str(API_DOC), "exec"), namespace)
    runs = [namespace["meta_train"](**TINY, outer_steps=3, seed=3) for _ in range(2)]
    (theta, losses), (theta_again, losses_again) = runs
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    assert losses == losses_again
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(theta_again)):
        np.testing.assert_array_equal(a, b)
    start = rule.init_theta(jax.random.PRNGKey(3), preset("tiny"))
    assert not np.allclose(ravel_pytree(theta)[0], ravel_pytree(start)[0])  # Adam moved it


def test_vectorized_step_equals_a_loop_over_tasks(tasks):
    step, theta, states, (batches, labeled) = tasks
    (loss, new_states), grad = step.meta_loss_and_grad(theta, states, batches, labeled)
    per_task = [step.step.meta_loss_and_grad(theta, *_task(i, (states, batches, labeled)))
                for i in range(step.num_tasks)]
    np.testing.assert_allclose(loss, np.mean([l for (l, _), _ in per_task]), rtol=1e-5)
    mean_grad = jax.tree_util.tree_map(lambda *g: np.mean(g, axis=0), *[g for _, g in per_task])
    np.testing.assert_allclose(ravel_pytree(grad)[0], ravel_pytree(mean_grad)[0],
                               rtol=1e-4, atol=1e-6)
    for i, ((_, state), _) in enumerate(per_task):
        expected = _task(i, new_states.params)
        np.testing.assert_allclose(ravel_pytree(state.params)[0], ravel_pytree(expected)[0],
                                   rtol=1e-5, atol=1e-7)
    # unroll_step: the same losses and states, per task, without the gradient
    unrolled, losses = step.unroll_step(theta, states, batches, labeled)
    np.testing.assert_allclose(np.mean(losses), loss, rtol=1e-6)
    np.testing.assert_array_equal(unrolled.inner_step, states.inner_step + TINY["unroll"])
    np.testing.assert_array_equal(unrolled.key, states.key)


def test_loss_is_unroll_loss_with_one_hot_labels(tasks):
    step, theta, states, (batches, labeled) = tasks
    new, losses = step.unroll_step(theta, states, batches, labeled)
    onehot = partial(jax.nn.one_hot, num_classes=step.step.num_classes)
    targets = truncated.LabeledBatch(labeled.x_support, onehot(labeled.y_support),
                                     labeled.x_query, onehot(labeled.y_query))
    expected, (params, _) = jax.jit(jax.vmap(
        lambda p, b, lb: truncated.unroll_loss(theta, p, b, lb, step.step.rule, kept=1)))(
            states.params, batches, targets)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(ravel_pytree(new.params)[0], ravel_pytree(params)[0], rtol=1e-5,
                               atol=1e-7)


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        cfg = preset("tiny")
        step = meta.TruncatedStep(rule=cfg, num_classes=3)
        keys = jax.random.split(jax.random.PRNGKey(4), 4)
        theta = rule.init_theta(keys[0], cfg, jnp.float64)
        state = meta.init_task_state(keys[1], BaseModelConfig(12, hidden=(10, 6), embedding=5))
        state = state._replace(params=jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                                             state.params))
        x = jax.random.uniform(keys[2], (60, 12), jnp.float64)
        batches, labeled = step.sample_data(state, x, jnp.arange(60) % 3, unroll=3, shots=4)
        grad = step.meta_loss_and_grad(theta, state, batches, labeled)[1]
        flat, unravel = ravel_pytree(theta)
        g = ravel_pytree(grad)[0]
        rng = np.random.default_rng(0)
        # Small: the rule's many relus put kinks within 1e-6 of theta along some directions.
        eps = 1e-7
        for v in [rng.normal(size=flat.size) for _ in range(3)] + [np.asarray(g)]:
            v = jnp.asarray(v / np.linalg.norm(v))
            hi, lo = (step.unroll_step(theta_, state, batches, labeled)[1]
                      for theta_ in (unravel(flat + eps * v), unravel(flat - eps * v)))
            np.testing.assert_allclose(g @ v, (hi - lo) / (2 * eps), rtol=1e-4, atol=1e-8)
        assert float(jnp.linalg.norm(g)) > 1e-4  # a gradient that is there to check


def test_sampled_data_is_balanced_disjoint_and_a_function_of_the_state(tasks, mnist):
    x, y, ds = mnist
    step, _, states, (batches, labeled) = tasks
    shots, unroll = TINY["shots"], TINY["unroll"]
    assert batches.shape == (step.num_tasks, unroll, step.step.rule.inner_batch, ds.input_dim)
    for i in range(step.num_tasks):
        for labels in (labeled.y_support[i], labeled.y_query[i]):
            assert np.bincount(np.asarray(labels), minlength=10).tolist() == [shots] * 10
        support = {r.tobytes() for r in np.asarray(labeled.x_support[i])}
        assert not support & {r.tobytes() for r in np.asarray(labeled.x_query[i])}
    again = step.sample_data(states, x, y, unroll=unroll, shots=shots)
    np.testing.assert_array_equal(again[0], batches)
    later = step.sample_data(states._replace(inner_step=states.inner_step + 1), x, y,
                             unroll=unroll, shots=shots)
    assert not np.array_equal(later[0], batches)
    assert not np.array_equal(batches[0], batches[1])  # each task draws its own data


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=10, activation="gelu"), "activation"),
    (dict(num_classes=10, l2=0.0), "l2"),
    (dict(num_classes=10, kept=-1), "kept"),
])
def test_bad_settings_say_which(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        meta.TruncatedStep(rule=preset("tiny"), **kwargs)


def test_settings_are_keywords_and_task_count_is_checked(tasks):
    step, theta, states, (batches, labeled) = tasks
    with pytest.raises(TypeError):
        meta.TruncatedStep(preset("tiny"), 10)
    three = meta.VectorizedTruncatedStep(step=step.step, num_tasks=3)
    with pytest.raises(ValueError, match="num_tasks=3"):
        three.unroll_step(theta, states, batches, labeled)
