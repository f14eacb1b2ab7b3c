"""Asynchronous meta-training on a local Ray instance: batching, staleness and NaN
drops, learner restarts, worker replacement, and resume across backends."""
import json
import os
import time

import jax
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from metarule import catalog, distributed, outer  # noqa: E402

TINY = dict(preset="tiny", datasets=("patches16",), dataset_weights=(1.0,), widths=(8,),
            depths=(1,), ways=(4,), shots=3,
            tasks_per_step=2, budget=(6, 6), unroll_start=(2, 3), unroll_end=(2, 3),
            eval_every_s=0.0, checkpoint_every_s=1e9, init="oja-learned")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: nothing to report to
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _rows(run_dir, kind):
    return [r for r in map(json.loads, open(run_dir / "metrics.jsonl")) if r["kind"] == kind]


def test_learner_batches_drops_and_restarts_from_its_checkpoint(local_ray, tmp_path):
    cfg = outer.MetaTrainConfig(**TINY)
    learner = distributed.Learner.remote(cfg, str(tmp_path), max_staleness=1)
    pub = ray.get(learner.get_theta.remote())
    ones = jax.tree_util.tree_map(np.ones_like, pub.theta)
    nans = jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), pub.theta)

    def push(grad, version, finite=True):
        return ray.get(learner.push.remote(distributed.Gradient(grad, version, 1, finite)))

    reply = push(ones, 0)                        # one task of the two of a step: batched
    assert (reply.step, reply.applied, reply.staleness) == (0, False, 0)
    reply = push(nans, 0)
    assert (reply.step, reply.applied, reply.dropped) == (0, False, 1)
    assert push(ones, 0, finite=False).dropped == 2   # the worker's own verdict counts too
    reply = push(ones, 0)                        # completes the batch of tasks_per_step = 2
    assert (reply.step, reply.applied) == (1, True)
    push(ones, 0)
    reply = push(ones, 0)                        # staleness 1 is within the bound
    assert (reply.step, reply.staleness) == (2, 1)
    reply = push(ones, 0)                        # staleness 2 is not
    assert (reply.step, reply.applied, reply.stale) == (2, False, 1)
    assert push(ones, 7).stale == 2              # nor is a version from before a restart
    after = ray.get(learner.get_theta.remote())
    assert after.version == 2 and not np.allclose(after.theta["merge"], pub.theta["merge"])

    ray.get(learner.checkpoint.remote())
    catalog.read_rule_file(tmp_path / "theta.npz")  # always a loadable rule
    ray.kill(learner, no_restart=False)          # Ray restarts it; it reloads the checkpoint
    restored = ray.get(learner.get_theta.remote())
    assert restored.version == 2 and restored.time_s >= after.time_s
    np.testing.assert_array_equal(restored.theta["merge"], after.theta["merge"])
    assert ray.get(learner.push.remote(distributed.Gradient(nans, 2, 1, True))).dropped == 3
    ray.kill(learner)


def test_run_outlives_a_worker_and_the_learner_and_resumes(local_ray, tmp_path):
    cfg = outer.MetaTrainConfig(**{**TINY, "eval_every_s": 1e9, "eval_datasets": ("patches16",),
                                   "eval_steps": 2, "eval_seeds": 2, "eval_widths": (8,),
                                   "snapshot_every": 2})
    killed, worker_flags = set(), []

    def kill_a_worker_then_the_learner(pool, row):
        if "worker" not in killed:
            killed.add("worker")
            actor = next(iter(pool.pending.values())).actor
            worker_flags.append(ray.get(actor.__ray_call__.remote(
                lambda self: os.environ.get("XLA_FLAGS"))))
            ray.kill(actor)
        elif row["step"] >= 3 and "learner" not in killed:
            killed.add("learner")
            # Restarts from its first checkpoint, written after the first step: two steps back.
            ray.kill(pool.learner, no_restart=False)
            # The kill is asynchronous: wait for the restart, so that no later push can reach
            # the old learner and end the run before training goes on.
            deadline = time.monotonic() + 120
            while ray.get(pool.learner.get_theta.remote()).version != 1:
                assert time.monotonic() < deadline, "the learner did not restart"
                time.sleep(0.1)

    # Two tasks a worker: the shapes of tests/test_outer.py, so the compiled programs are shared.
    state = distributed.run(cfg, tmp_path, steps=4, workers=2, progress=False,
                            tasks_per_worker=2, on_result=kill_a_worker_then_the_learner)
    train = _rows(tmp_path, "train")
    assert state.step == 4 and train[-1]["step"] == 4
    assert train[-1]["replaced"] == 1
    assert worker_flags == [distributed.SINGLE_THREAD_XLA]  # one XLA thread per worker
    # The restarted learner started over (its step fell back), and training went on.
    assert any(r["step"] < before["step"] for before, r in zip(train, train[1:]))
    assert {"meta_loss", "grad_norm", "dropped", "tasks_per_s", "time_s", "worker",
            "staleness"} <= set(train[-1])
    evals = _rows(tmp_path, "eval")                  # the starting rule, evaluated once
    assert [(r["dataset"], r["step"]) for r in evals] == [("patches16", 0)]
    assert (tmp_path / "meta_training.png").exists()
    assert catalog.read_rule_file(tmp_path / "theta.npz").card["outer_steps"] == 4
    # The learner keeps snapshots and the best theta by held-out meta-objective, as outer.run.
    assert {p.name for p in (tmp_path / "snapshots").iterdir()} == {
        "theta_000000.npz", "theta_000002.npz", "theta_000004.npz"}
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 0
    assert catalog.read_rule_file(tmp_path / "theta_best.npz").card["outer_steps"] == 0

    assert distributed.run(cfg, tmp_path, steps=1, workers=1, resume=True,
                           progress=False).step == 5
    assert [r["step"] for r in _rows(tmp_path, "eval")] == [0]  # no re-evaluation on resume
    # The local backend can resume it: the checkpoint holds base models for its next group.
    state, saved_cfg = outer.load_checkpoint(tmp_path)
    assert state.step == 5 and saved_cfg == cfg
    group = outer.sample_group(outer.TaskSampler(outer.task_config(cfg), cfg.seed), cfg,
                               state.group_index)
    expected = outer.init_group_params(group, cfg)
    assert jax.tree_util.tree_map(np.shape, state.params) == jax.tree_util.tree_map(
        np.shape, expected)
