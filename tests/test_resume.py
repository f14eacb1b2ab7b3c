"""Meta-training survives kill -9 at any moment after its first step: checkpoints on a step
count and after the first step, metrics without repeated steps, and a fault-injection run that
ends bit for bit where an uninterrupted one does."""
import json
import math
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from metarule import catalog, cli, outer
from metarule.config import ConfigError

# tests/test_outer.py's TINY (its compiled programs are shared), with nothing to evaluate.
TINY = dict(preset="tiny", datasets=("patches16",), dataset_weights=(1.0,), widths=(8,),
            depths=(1,), ways=(4,), shots=3, tasks_per_step=2, budget=(6, 6),
            eval_every_s=0.0, checkpoint_every_s=1e9, init="oja-learned", eval_datasets=())


def test_first_checkpoint_follows_the_first_step_then_steps_or_seconds():
    cfg = outer.MetaTrainConfig(**{**TINY, "checkpoint_every_steps": 3,
                                   "checkpoint_every_s": 60.0})
    new = outer.Saved(0, -math.inf)
    assert not outer.checkpoint_due(cfg, 0, new, now=0.0)  # nothing done yet
    assert outer.checkpoint_due(cfg, 1, new, now=0.0)
    saved = outer.Saved(1, 100.0)
    assert [outer.checkpoint_due(cfg, s, saved, now=101.0) for s in (1, 2, 3, 4)] == [
        False, False, False, True]
    assert outer.checkpoint_due(cfg, 2, saved, now=160.0)      # the time came first
    assert not outer.checkpoint_due(cfg, 1, saved, now=1e9)    # a saved step is not saved again
    on_time = outer.MetaTrainConfig(**TINY)                    # 0 steps: on time only
    assert not outer.checkpoint_due(on_time, 10 ** 6, saved, now=101.0)
    for bad in ({"checkpoint_every_steps": -1}, {"checkpoint_every_s": -1.0},
                {"checkpoint_every_s": math.nan}):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            outer.MetaTrainConfig(**{**TINY, **bad})


def test_checkpoint_flags_are_run_settings_a_resume_may_change():
    args = cli.build_parser().parse_args(
        ["meta-train", "--resume", "--checkpoint-every-steps", "5", "--checkpoint-every-s", "30"])
    cfg, settings = cli.meta_train_config(args)
    assert (cfg.checkpoint_every_steps, cfg.checkpoint_every_s) == (5, 30.0)
    saved = outer.MetaTrainConfig(**TINY)
    resumed = outer.resumed_config(saved, settings)
    assert resumed == outer.MetaTrainConfig(**{**TINY, "checkpoint_every_steps": 5,
                                               "checkpoint_every_s": 30.0})
    with pytest.raises(cli.UsageError, match="--checkpoint-every-steps: must be an integer >= 0"):
        cli.build_parser().parse_args(["meta-train", "--checkpoint-every-steps", "-2"])


def test_a_resume_drops_the_rows_of_the_steps_it_redoes(tmp_path):
    local = [{"kind": "eval", "step": 0}] + [{"kind": "train", "step": s} for s in range(5)] + [
        {"kind": "eval", "step": 3}, {"kind": "eval", "step": 4}]
    ray_rows = [{"kind": "train", "step": 2, "applied": False},
                {"kind": "train", "step": 3, "applied": True},
                {"kind": "train", "step": 3, "applied": False},   # pending: lost by the kill
                {"kind": "train", "step": 4, "applied": True}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in local + ray_rows) + '{"kind": "tr')
    outer.trim_metrics(tmp_path, lambda row: outer.held_by_checkpoint(row, 3))
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == ([{"kind": "eval", "step": 0}] + [{"kind": "train", "step": s}
                                                      for s in range(3)]
                    + [{"kind": "eval", "step": 3}] + ray_rows[:2])


def test_a_new_run_in_a_folder_left_without_a_checkpoint_logs_afresh(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 0}\n')
    outer.prepare_run_dir(outer.MetaTrainConfig(**TINY), tmp_path, resume=False)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


# The killed run: every atomic write (checkpoint.pkl, theta.npz, metrics.jsonl) pauses between
# its bytes and its rename, so that a kill can land inside a checkpoint write.
RUNNER = """
import os, sys, time
from pathlib import Path
from metarule import outer

run_dir, total, pause = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
fsync = os.fsync
os.fsync = lambda fd: (fsync(fd), time.sleep(pause))
resume = (run_dir / "checkpoint.pkl").exists()
done = outer.load_checkpoint(run_dir)[0].step if resume else 0
outer.run(outer.MetaTrainConfig(**{cfg}), run_dir, steps=total - done, resume=resume,
          progress=False)
"""


def _rows(run_dir):
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]  # not a torn last line


def _kill_when(proc, condition, what, delay=0.0):
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} within 300 s"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_at_random_moments_then_resume_ends_bit_for_bit_as_an_uninterrupted_run(
        tmp_path):
    steps, cfg = 8, {**TINY, "checkpoint_every_steps": 2}  # checkpoints after 1, 3, 5, 7, 8
    run_dir = tmp_path / "killed"
    code = RUNNER.format(cfg=repr(cfg))

    def start():
        return subprocess.Popen([sys.executable, "-c", code, str(run_dir), str(steps), "0.3"],
                                stderr=subprocess.PIPE, text=True)

    def new_checkpoint_write(seen=frozenset()):
        return lambda: bool(set(run_dir.glob("checkpoint.pkl*.tmp")) - seen)

    # 1. Inside the first checkpoint write: nothing to resume, the next start is a new run.
    _kill_when(start(), new_checkpoint_write(), "the first checkpoint write")
    assert not (run_dir / "checkpoint.pkl").exists()
    # 2. Inside a later checkpoint write, the first one done.
    seen = set(run_dir.glob("*.tmp"))
    _kill_when(start(), lambda: (run_dir / "checkpoint.pkl").exists()
               and new_checkpoint_write(seen)(), "a second checkpoint write")
    # 3. At a random moment after a resumed step.
    logged = len(_rows(run_dir))
    _kill_when(start(), lambda: len(_rows(run_dir)) > logged, "a resumed step",
               delay=np.random.default_rng(0).uniform(0, 1.0))
    proc = start()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err

    # The uninterrupted run, in this process: outer.run promises bit for bit on one machine.
    full = outer.run(outer.MetaTrainConfig(**cfg), tmp_path / "full", steps=steps,
                     progress=False)
    state, _ = outer.load_checkpoint(run_dir)
    rule = catalog.read_rule_file(run_dir / "theta.npz")
    assert state.step == full.step == rule.card["outer_steps"] == steps
    for a, b in zip(jax.tree_util.tree_leaves((full.theta, full.params, full.theta)),
                    jax.tree_util.tree_leaves((state.theta, state.params, rule.theta))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["step"] for r in _rows(run_dir)] == list(range(steps))  # each step logged once
    assert not list(run_dir.glob("*.tmp"))  # the killed writes' leftovers are gone
