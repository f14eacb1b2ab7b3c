"""Meta-training: the meta-gradient descends, runs resume exactly, NaNs are dropped."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metarule import catalog, cli, outer, runtime, truncated
from metarule.config import ConfigError

TINY = dict(preset="tiny", datasets=("patches16",), dataset_weights=(1.0,), widths=(8,),
            depths=(1,), ways=(4,), shots=3, tasks_per_step=2, budget=(6, 6),
            eval_every_s=0.0, checkpoint_every_s=1e9, init="oja-learned")


def test_outer_steps_lower_the_meta_objective_on_a_fixed_task():
    cfg = outer.MetaTrainConfig(**TINY)
    sampler = outer.TaskSampler(outer.task_config(cfg), 0)
    state, group = outer.init_state(cfg, sampler)
    batches, labeled = outer.step_data(group, cfg, 0, 4)
    opt = optax.adam(3e-3)
    theta, opt_state = state.theta, opt.init(state.theta)
    losses = []
    for _ in range(15):
        loss, _, grad, _ = truncated.truncated_grad(theta, state.params, batches, labeled,
                                                    cfg.rule_cfg)
        losses.append(float(loss))
        updates, opt_state = opt.update(grad, opt_state)
        theta = optax.apply_updates(theta, updates)
    assert losses[-1] < losses[0] - 0.01, losses


def _leaves_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_after_a_crash_continues_the_run(tmp_path):
    cfg = outer.MetaTrainConfig(**TINY, snapshot_every=2)
    full = outer.run(cfg, tmp_path / "full", steps=5, progress=False)
    outer.run(cfg, tmp_path / "split", steps=2, progress=False)
    # the crash: a half-written temporary file left behind must not be read
    (tmp_path / "split" / "checkpoint.pkl.partial.tmp").write_bytes(b"\x00garbage")
    # A resume may change how the run is watched (snapshots), not what it learns.
    resumed = outer.run(cfg, tmp_path / "split", steps=3, resume=True, progress=False,
                        settings={"snapshot_every": 3, "eval_every_s": None})
    assert resumed.step == full.step == 5
    _leaves_equal(full.theta, resumed.theta)   # bit-for-bit: every input is a function of
    _leaves_equal(full.params, resumed.params)  # (seed, step) and the checkpoint is exact
    rows = [json.loads(l) for l in open(tmp_path / "split" / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(5))
    assert (tmp_path / "split" / "meta_training.png").exists()
    snaps = sorted(p.name for p in (tmp_path / "split" / "snapshots").iterdir())
    assert snaps == ["theta_000000.npz", "theta_000002.npz", "theta_000003.npz"]
    assert json.loads((tmp_path / "split" / "config.json").read_text())["snapshot_every"] == 3
    assert outer.load_checkpoint(tmp_path / "split")[1].snapshot_every == 3
    last = catalog.load_rule(str(tmp_path / "full" / "snapshots" / "theta_000004.npz"))
    assert last.card["outer_steps"] == 4
    with pytest.raises(ConfigError, match="--resume"):
        outer.run(cfg, tmp_path / "full", steps=1, progress=False)
    with pytest.raises(ConfigError, match="only checkpoint_every_s, checkpoint_every_steps, eval_every_s"):
        outer.run(cfg, tmp_path / "full", steps=1, resume=True, settings={"seed": 1})


def test_non_finite_gradients_are_dropped(monkeypatch):
    cfg = outer.MetaTrainConfig(**TINY)
    sampler = outer.TaskSampler(outer.task_config(cfg), 0)
    state, group = outer.init_state(cfg, sampler)
    real = truncated.truncated_grad

    def poisoned(*args, **kwargs):
        loss, params, grad, losses = real(*args, **kwargs)
        return loss, params, jax.tree_util.tree_map(lambda g: g * jnp.nan, grad), losses

    monkeypatch.setattr(truncated, "truncated_grad", poisoned)
    new, _, metrics = outer.train_step(state, group, cfg, sampler)
    assert metrics["dropped"] == new.dropped == 1
    _leaves_equal(new.theta, state.theta)
    assert new.group_index == state.group_index + 1  # the poisoned tasks are replaced


def test_curriculum_and_schedule():
    cfg = outer.MetaTrainConfig(curriculum_steps=100)
    rng = np.random.default_rng(0)
    early = [outer.unroll_length(cfg, 0, rng) for _ in range(200)]
    late = [outer.unroll_length(cfg, 500, rng) for _ in range(200)]
    assert min(early) == 2 and max(early) == 4 and min(late) == 8 and max(late) == 15
    with pytest.raises(ConfigError):
        outer.MetaTrainConfig(lr_values=(1e-3,), lr_boundaries=(10,))


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_learning_rate_schedule_boundaries(preset):
    """Adam's first moment over its root second moment is 1 for a constant gradient, so each
    outer step moves theta by the schedule's learning rate at that step: the value of each piece
    holds up to the step before its boundary and the next one starts at the boundary."""
    cfg = outer.default_config(preset)
    opt = outer.optimizer(cfg)
    grad = jnp.ones(())  # norm 1: below the clip norm, so clipping leaves it alone

    def step(state, _):
        updates, state = opt.update(grad, state)
        return state, updates

    _, moves = jax.lax.scan(step, opt.init(grad), None, length=cfg.lr_boundaries[-1] + 2)
    lrs = -np.asarray(moves)
    edges = (0, *cfg.lr_boundaries)
    for piece, (start, value) in enumerate(zip(edges, cfg.lr_values)):
        np.testing.assert_allclose(lrs[start], value, rtol=1e-4,  # float32
                                   err_msg=f"piece {piece} start")
        if piece + 1 < len(edges):
            np.testing.assert_allclose(lrs[edges[piece + 1] - 1], value, rtol=1e-4,
                                       err_msg=f"piece {piece} end")
    np.testing.assert_allclose(lrs[-1], cfg.lr_values[-1], rtol=1e-4)
    if preset == "paper":  # App. H.2: 3e-4, then 1e-4 from step 100k, then 2e-5 from 150k
        assert cfg.lr_values == (3e-4, 1e-4, 2e-5) and cfg.lr_boundaries == (100_000, 150_000)
    clipped, _ = opt.update(jnp.full((), 50.0), opt.init(grad))  # norm 50 -> 5, same Adam step
    np.testing.assert_allclose(-clipped, cfg.lr_values[0], rtol=1e-4)


def test_sigterm_ends_a_run_with_a_final_checkpoint(tmp_path):
    """A scheduler's SIGTERM stops the run cleanly: the checkpoint holds every logged step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    code = (f"from metarule import outer; "
            f"outer.run(outer.MetaTrainConfig(**{TINY!r}), {str(run_dir)!r}, hours=1, "
            f"progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "run did not start"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "stopped by SIGTERM" in err  # after the checkpoint
    state, _ = outer.load_checkpoint(run_dir)
    logged = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
    assert state.step == len(logged) and logged == list(range(len(logged)))
    assert os.path.exists(run_dir / "meta_training.png")


def test_sigterm_during_a_gc_callback_is_not_lost():
    # CI once lost a SIGTERM: a handler's exception raised inside JAX's gc callback is ignored.
    import gc
    import os
    import signal

    def callback(phase, info):
        if phase == "start":
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside the callback

    before = signal.getsignal(signal.SIGTERM)
    with runtime.stop_signals():
        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
        with pytest.raises(runtime.Terminated):  # where the run's loop checks, between steps
            runtime.check_stop()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_run_stopped_by_sigterm_says_where_its_checkpoint_is(tmp_path):
    with pytest.raises(SystemExit, match=f"checkpoint is in {tmp_path}"):
        with outer.stop_gracefully(tmp_path):
            raise runtime.Terminated()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C stays Ctrl-C (the CLI's exit status 130)
        with outer.stop_gracefully(tmp_path):
            raise KeyboardInterrupt


def test_a_run_can_start_from_a_meta_trained_rule(tmp_path):
    # Fine-tuning: the run's first theta is the rule file's, bit for bit.
    cfg = outer.MetaTrainConfig(**TINY)
    theta = catalog.init_rule("sanger", cfg.rule_cfg, jax.random.PRNGKey(3))
    theta = dict(theta, merge=theta["merge"] + 0.25)
    catalog.save_rule(tmp_path / "start.npz", theta, cfg.rule_cfg, {"name": "start"})
    fine = outer.MetaTrainConfig(**{**TINY, "init": str(tmp_path / "start.npz")})
    state, _ = outer.init_state(fine, outer.TaskSampler(outer.task_config(fine), 0))
    _leaves_equal(state.theta, theta)
    # ... and only with the rule config it was meta-trained with.
    other = outer.MetaTrainConfig(**{**TINY, "preset": "cpu", "init": str(tmp_path / "start.npz")})
    with pytest.raises(catalog.RuleError, match="another rule config"):
        outer.init_state(other, outer.TaskSampler(outer.task_config(other), 0))


def test_lr_flag_rescales_the_schedule():
    assert cli.scaled_lr("cpu", None) is None
    np.testing.assert_allclose(cli.scaled_lr("cpu", 3e-4), (3e-4, 9e-5, 3e-5))
    with pytest.raises(ConfigError, match="--lr must be a number >= 0"):
        cli.scaled_lr("cpu", -1e-4)
    with pytest.raises(ConfigError, match="all > 0, or all 0"):
        outer.MetaTrainConfig(**{**TINY, "lr_values": (1e-3, 0.0, 1e-4)})


def test_zero_lr_is_a_frozen_theta_control(tmp_path):
    frozen_cfg = outer.MetaTrainConfig(**{**TINY, "lr_values": cli.scaled_lr("cpu", 0.0)})
    assert frozen_cfg.lr_values == (0.0, 0.0, 0.0)
    start = outer.init_state(frozen_cfg, outer.TaskSampler(outer.task_config(frozen_cfg), 0))[0]
    frozen = outer.run(frozen_cfg, tmp_path / "frozen", steps=3, progress=False)
    outer.run(outer.MetaTrainConfig(**TINY), tmp_path / "real", steps=3, progress=False)
    _leaves_equal(frozen.theta, start.theta)

    def stream(run):
        rows = [json.loads(l) for l in open(tmp_path / run / "metrics.jsonl")]
        return [(r["dataset"], r["inner_step"], r["unroll"]) for r in rows if r["kind"] == "train"]
    assert stream("frozen") == stream("real")  # the same tasks, so the runs compare row by row
