"""Asynchronous meta-training with Ray actors (Section 4.3, App. C, Algorithm 1 of App. F).

Three kinds of actor, put together by the driver loop in `run`:

* `Learner` (the parameter server): owns theta and the Adam state. It batches the gradients
  that workers push until they cover `tasks_per_step` tasks, drops gradients that are
  non-finite or computed on a theta more than `max_staleness` versions old, applies the
  average (clip + Adam, `outer.optimizer`) and bumps the version. It checkpoints in the
  format of `outer.save_checkpoint`, so either backend resumes the other's run, and it
  restores the latest checkpoint when Ray restarts it.
* `Worker`: keeps its own group of tasks and their base models across truncations (Algorithm
  1's inner loop), computes one truncated meta-gradient on the theta it is handed, continues
  from the final base-model state and draws a new group when the budget is spent.
* `Evaluator`: scores theta on the held-out datasets off the training path.

The driver keeps a {ref: worker} dict, waits for the first worker to finish, hands its
gradient to the learner and resubmits that worker with the latest theta. A worker that dies is
replaced by a new one; the replacements are counted in metrics.jsonl.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metarule import outer
from metarule.runtime import all_finite, check_stop, enable_compilation_cache
from metarule.config import ConfigError

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # an optional dependency: say how to get it (the CLI prints ConfigError)
    raise ConfigError("the ray backend needs Ray: pip install -e '.[ray]'") from None
from metarule.outer import MetaTrainConfig, TrainState

MAX_STALENESS = 4
# One XLA thread per worker process, so that W workers on a node do not start W x cores threads;
# on two idle cores it is as fast as XLA's own pool (docs/distributed.md).
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class Published(NamedTuple):
    """theta as the learner publishes it."""
    theta: dict      # numpy leaves
    version: int     # outer steps applied to theta
    time_s: float    # meta-training seconds behind this version


class Gradient(NamedTuple):
    """One worker's truncated meta-gradient, as pushed to the learner."""
    grad: dict       # numpy leaves; mean over the worker's tasks and unroll steps
    version: int     # the theta version it was computed on
    n_tasks: int
    finite: bool     # gradient and final base models finite (outer.train_step's test)


class Reply(NamedTuple):
    """The learner's answer to one pushed gradient."""
    step: int        # theta version after the push
    applied: bool    # the push completed a batch and theta took an Adam step
    staleness: int   # versions theta moved on while the gradient was computed
    dropped: int     # non-finite gradients dropped so far (TrainState.dropped)
    stale: int       # gradients dropped as too stale since the learner (re)started
    time_s: float


class LearnerState(NamedTuple):
    train: TrainState                # theta, Adam state, step, dropped, elapsed_s
    pending: tuple[Gradient, ...]    # accepted gradients of the batch being filled
    stale: int


def to_host(tree) -> dict:
    return jax.tree_util.tree_map(np.asarray, tree)


# ----------------------------------------------------------------------------- the learner

def mean_gradient(grads: tuple[Gradient, ...]) -> dict:
    """Average weighted by tasks, so that the batch is the mean over all its tasks."""
    total = sum(g.n_tasks for g in grads)
    return jax.tree_util.tree_map(lambda *leaves: sum(
        (g.n_tasks / total) * np.asarray(a) for g, a in zip(grads, leaves)),
        *(g.grad for g in grads))


def push_gradient(state: LearnerState, g: Gradient, cfg: MetaTrainConfig, max_staleness: int,
                  apply: Callable) -> tuple[LearnerState, bool, int]:
    """Accept, batch or drop one gradient; step theta once the batch covers tasks_per_step.

    Args:
      apply: (theta, opt_state, grad) -> (theta, opt_state), the clipped Adam step.
    Returns:
      (new state, whether theta stepped, staleness of g).
    """
    train = state.train
    staleness = train.step - g.version
    if not (g.finite and all_finite(g.grad)):
        return state._replace(train=train._replace(dropped=train.dropped + 1)), False, staleness
    # A version from the future is from before a learner restart: its theta is gone.
    if not 0 <= staleness <= max_staleness:
        return state._replace(stale=state.stale + 1), False, staleness
    pending = state.pending + (g,)
    if sum(p.n_tasks for p in pending) < cfg.tasks_per_step:
        return state._replace(pending=pending), False, staleness
    theta, opt_state = apply(train.theta, train.opt_state, mean_gradient(pending))
    train = train._replace(theta=theta, opt_state=opt_state, step=train.step + 1)
    return LearnerState(train, (), state.stale), True, staleness


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Learner:
    """The parameter server. Restarted without limit by Ray; the constructor restores the
    latest checkpoint, so a restart loses the steps since (`outer.checkpoint_due`). Calls made
    while it restarts are retried (at least once): a retried push of a gradient from a lost
    version is dropped as stale."""

    def __init__(self, cfg: MetaTrainConfig, run_dir: str, max_staleness: int = MAX_STALENESS):
        enable_compilation_cache()
        self.cfg, self.run_dir, self.max_staleness = cfg, Path(run_dir), max_staleness
        opt = outer.optimizer(cfg)

        def apply(theta, opt_state, grad):
            updates, opt_state = opt.update(grad, opt_state, theta)
            return optax.apply_updates(theta, updates), opt_state

        self.apply = jax.jit(apply)
        sampler = outer.TaskSampler(outer.task_config(cfg), cfg.seed)
        if (self.run_dir / "checkpoint.pkl").exists():
            train, _ = outer.load_checkpoint(self.run_dir)
            handoff = outer.sample_group(sampler, cfg, train.group_index + 1)
            params = outer.init_group_params(handoff, cfg)
            self.saved = outer.Saved(train.step, time.monotonic())
        else:
            train, handoff = outer.init_state(cfg, sampler)
            params = train.params
            self.saved = outer.Saved(train.step, -math.inf)
        # Workers keep their own tasks, so a checkpoint hands the local backend a fresh group
        # (one it has not used) with new base models.
        self.train_fields = dict(group_index=handoff.index, group_start=train.step,
                                 inner_steps=0, params=params)
        self.state = LearnerState(train._replace(params=None), (), 0)
        self.t0, self.elapsed0 = time.monotonic(), train.elapsed_s
        outer.save_snapshot(self.run_dir, self.current(), cfg)

    def current(self) -> TrainState:
        return self.state.train._replace(elapsed_s=self.elapsed())

    def elapsed(self) -> float:
        return self.elapsed0 + time.monotonic() - self.t0

    def get_theta(self) -> Published:
        train = self.state.train
        return Published(to_host(train.theta), train.step, round(self.elapsed(), 1))

    def push(self, g: Gradient) -> Reply:
        self.state, applied, staleness = push_gradient(self.state, g, self.cfg,
                                                       self.max_staleness, self.apply)
        if applied:
            outer.save_snapshot(self.run_dir, self.current(), self.cfg)
        if outer.checkpoint_due(self.cfg, self.state.train.step, self.saved, time.monotonic()):
            self.checkpoint()
        train = self.state.train
        return Reply(train.step, applied, staleness, train.dropped, self.state.stale,
                     round(self.elapsed(), 1))

    def keep_best(self, evals: list[dict], pub: Published) -> None:
        """outer.keep_best for the theta the evaluator scored (the learner owns run_dir)."""
        outer.keep_best(self.run_dir, pub.theta, self.cfg.rule_cfg,
                        outer.card(self.run_dir, self.cfg, pub.version, pub.time_s), pub.version,
                        evals)

    def checkpoint(self) -> TrainState:
        """Write checkpoint.pkl and theta.npz atomically; returns the saved state."""
        train = self.current()._replace(**self.train_fields)
        outer.save_checkpoint(self.run_dir, train, self.cfg)
        self.saved = outer.Saved(train.step, time.monotonic())
        return train


# ----------------------------------------------------------------------------- workers

def worker_seed(seed: int, uid: int, start_step: int) -> int:
    """A task stream of its own for every worker, also after replacements and resumes."""
    return int(np.random.SeedSequence([seed, uid, start_step]).generate_state(1)[0] >> 1)


class WorkerState(NamedTuple):
    group: outer.Group
    params: object     # the group's base models (leading task axis)
    inner_steps: int   # taken by the current group
    truncations: int   # computed by this worker: seeds the data and unroll length


def new_group(cfg: MetaTrainConfig, sampler, index: int, truncations: int) -> WorkerState:
    group = outer.sample_group(sampler, cfg, index)
    return WorkerState(group, outer.init_group_params(group, cfg), 0, truncations)


def truncation(state: WorkerState, pub: Published, cfg: MetaTrainConfig, sampler
               ) -> tuple[WorkerState, Gradient, dict]:
    """outer.train_step's truncation with the worker's own data stream and the learner's step
    for the curriculum; the group is replaced when its budget is spent or it diverged."""
    rng = np.random.default_rng([cfg.seed, state.truncations, 3])
    unroll = outer.unroll_length(cfg, pub.version, rng)
    batches, labeled = outer.step_data(state.group, cfg, state.truncations, unroll)
    loss, params, grad = outer.group_gradient(pub.theta, state.params, batches, labeled, cfg,
                                              state.group.activation)
    finite = all_finite(grad) and all_finite(params)
    inner_steps = state.inner_steps + unroll
    n_tasks, task = len(state.group.tasks), state.group.tasks[0]
    info = {"meta_loss": float(loss),
            "grad_norm": float(optax.global_norm(grad)) if finite else float("nan"),
            "unroll": unroll, "dataset": task.dataset, "width": task.hidden[0],
            "depth": len(task.hidden), "group": state.group.index, "inner_step": inner_steps}
    if inner_steps >= state.group.budget or not finite:
        state = new_group(cfg, sampler, state.group.index + 1, state.truncations + 1)
    else:
        state = WorkerState(state.group, params, inner_steps, state.truncations + 1)
    return state, Gradient(to_host(grad), pub.version, n_tasks, finite), info


@ray.remote(num_cpus=1)
class Worker:
    """Not restarted by Ray: the driver replaces a dead worker with a new one (new tasks)."""

    def __init__(self, cfg: MetaTrainConfig, uid: int, start_step: int, tasks: int):
        enable_compilation_cache()
        self.cfg = dataclasses.replace(cfg, seed=worker_seed(cfg.seed, uid, start_step),
                                       tasks_per_step=tasks)
        self.sampler = outer.TaskSampler(outer.task_config(self.cfg), self.cfg.seed)
        self.state = new_group(self.cfg, self.sampler, 0, 0)

    @ray.method(num_returns=2)
    def compute(self, pub: Published) -> tuple[Gradient, dict]:
        """(gradient for the learner, metrics for the driver): two objects, so the gradient
        goes from worker to learner without passing through the driver."""
        self.state, grad, info = truncation(self.state, pub, self.cfg, self.sampler)
        return grad, info


@ray.remote(num_cpus=0)
class Evaluator:
    """outer.evaluate_theta on the held-out datasets, loaded once."""

    def __init__(self, cfg: MetaTrainConfig):
        enable_compilation_cache()
        self.cfg = cfg
        self.datasets = outer.held_out_datasets(cfg)

    def evaluate(self, pub: Published) -> list[dict]:
        theta = jax.tree_util.tree_map(jnp.asarray, pub.theta)
        return [{**row, "step": pub.version, "time_s": pub.time_s}
                for row in outer.evaluate_theta(theta, self.cfg, self.datasets)]


# ----------------------------------------------------------------------------- the driver

class Slot(NamedTuple):
    uid: int
    actor: ray.actor.ActorHandle
    grad_ref: ray.ObjectRef


@dataclasses.dataclass
class Pool:
    """The driver's view of the workers: pending[info ref] -> the worker computing it."""
    cfg: MetaTrainConfig
    tasks: int                      # tasks per worker
    learner: ray.actor.ActorHandle
    single_thread: bool = True      # workers run XLA on one thread each
    pending: dict = dataclasses.field(default_factory=dict)
    next_uid: int = 0
    replaced: int = 0               # dead workers replaced

    def submit(self, uid: int, actor, theta_ref) -> None:
        grad_ref, info_ref = actor.compute.remote(theta_ref)
        self.pending[info_ref] = Slot(uid, actor, grad_ref)

    def spawn(self, theta_ref, start_step: int) -> None:
        uid, self.next_uid = self.next_uid, self.next_uid + 1
        # XLA reads its flags when the worker's process first uses JAX, so they go in its env.
        env = {"env_vars": {"XLA_FLAGS": SINGLE_THREAD_XLA}} if self.single_thread else None
        actor = Worker.options(runtime_env=env).remote(self.cfg, uid, start_step, self.tasks)
        self.submit(uid, actor, theta_ref)


def tasks_per_s(arrivals: collections.deque, tasks: int) -> float:
    """Throughput over the recent arrivals (monotonic times) of gradients of `tasks` tasks."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return 0.0
    return round(tasks * (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 2)


def connect(address: str | None, workers: int | None) -> bool:
    """Join the cluster at `address`, or start a quiet local instance with one CPU per worker.
    Returns whether this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    # No dashboard or usage reporting: nothing outside the cluster is contacted.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, logging_level=logging.ERROR)
    else:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                 logging_level=logging.ERROR)
    return True


def launch(cfg: MetaTrainConfig, run_dir: Path, workers: int | None, tasks_per_worker: int | None,
           max_staleness: int, single_thread: bool):
    """The learner and the evaluator on this node, and the workers on the learner's theta.
    Returns (pool, evaluator or None, the ref of theta, its version)."""
    workers = workers or int(ray.cluster_resources().get("CPU", 1))
    tasks = tasks_per_worker or max(1, cfg.tasks_per_step // workers)
    # The learner writes run_dir: keep it (and its restarts) on the driver's machine.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    learner = Learner.options(scheduling_strategy=here).remote(cfg, str(run_dir), max_staleness)
    evaluator = (Evaluator.options(scheduling_strategy=here).remote(cfg)
                 if cfg.eval_every_s > 0 else None)
    theta_ref = learner.get_theta.remote()
    version = ray.get(theta_ref).version
    pool = Pool(cfg, tasks, learner, single_thread)
    for _ in range(workers):
        pool.spawn(theta_ref, version)
    return pool, evaluator, theta_ref, version


@dataclasses.dataclass
class Driver:
    """The driver loop's state: the latest theta (the one workers are handed), the evaluation
    in flight, and the metrics log."""
    pool: Pool
    evaluator: ray.actor.ActorHandle | None
    log: TextIO
    theta_ref: ray.ObjectRef
    step: int                        # theta's version behind theta_ref
    last_eval: float                 # time.monotonic() of the latest evaluation's start
    evaluating: tuple | None = None  # (its rows' ref, the ref of the theta it scores)
    arrivals: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=32))

    def evaluate(self, every_s: float) -> None:
        """Start an evaluation of the latest theta when one is due; log a finished one."""
        if self.evaluator and self.evaluating is None and \
                time.monotonic() - self.last_eval >= every_s:
            self.evaluating = (self.evaluator.evaluate.remote(self.theta_ref), self.theta_ref)
            self.last_eval = time.monotonic()
        if self.evaluating is not None and ray.wait([self.evaluating[0]], timeout=0)[0]:
            self.write_eval()

    def write_eval(self) -> None:
        rows_ref, scored_ref = self.evaluating
        rows = ray.get(rows_ref)
        for row in rows:
            self.log.write(json.dumps(row) + "\n")
        ray.get(self.pool.learner.keep_best.remote(rows, scored_ref))
        self.evaluating = None

    def receive(self, info_ref: ray.ObjectRef) -> dict | None:
        """Hand a finished worker's gradient to the learner and resubmit the worker with the
        latest theta; returns the logged metrics row, or None for a dead worker (replaced)."""
        pool = self.pool
        slot = pool.pending.pop(info_ref)
        try:
            info = ray.get(info_ref)
        except ray.exceptions.RayActorError:
            pool.replaced += 1
            pool.spawn(self.theta_ref, self.step)
            return None
        reply = ray.get(pool.learner.push.remote(slot.grad_ref))
        if reply.step != self.step:  # a new step, or a restarted learner's older one
            self.theta_ref, self.step = pool.learner.get_theta.remote(), reply.step
        pool.submit(slot.uid, slot.actor, self.theta_ref)
        self.arrivals.append(time.monotonic())
        row = {"kind": "train", "step": reply.step, **info, "dropped": reply.dropped,
               "stale": reply.stale, "staleness": reply.staleness, "applied": reply.applied,
               "worker": slot.uid, "replaced": pool.replaced,
               "tasks_per_s": tasks_per_s(self.arrivals, pool.tasks), "time_s": reply.time_s}
        self.log.write(json.dumps(row) + "\n")
        return row

    def finish(self) -> TrainState:
        """Log the evaluation in flight (worth its wait), write the final checkpoint, close the
        log and end every actor; returns the checkpointed state."""
        if self.evaluating is not None:
            self.write_eval()
        state = ray.get(self.pool.learner.checkpoint.remote())
        self.log.close()
        actors = [slot.actor for slot in self.pool.pending.values()]
        for actor in actors + [self.pool.learner, self.evaluator]:
            if actor is not None:
                ray.kill(actor)
        return state


def run(cfg: MetaTrainConfig, run_dir: str | Path, hours: float | None = None,
        steps: int | None = None, resume: bool = False, workers: int | None = 2,
        address: str | None = None, progress: bool = True, *,
        max_staleness: int = MAX_STALENESS, tasks_per_worker: int | None = None,
        single_thread: bool = True, settings: dict | None = None,
        on_result: Callable[[Pool, dict], None] | None = None) -> TrainState:
    """Meta-train asynchronously until `hours` of wall time or `steps` outer steps.

    Args:
      workers: Worker actors; None for one per CPU of the cluster.
      address: a running Ray cluster ("auto", "HOST:6379"); None starts a local one.
      max_staleness: gradients computed on a theta more than this many steps behind are
        dropped.
      tasks_per_worker: tasks each worker vmaps; by default tasks_per_step is split between
        the workers, and the learner batches gradients until they cover tasks_per_step.
      single_thread: one XLA thread per worker (SINGLE_THREAD_XLA); False keeps XLA's pool.
      settings: new RUN_SETTINGS for a resumed run (outer.resumed_config).
      on_result: called with (pool, metrics row) after each gradient (tests kill workers).
    Returns:
      The final checkpointed TrainState (its params are a fresh group for the local backend).
    """
    from tqdm import tqdm

    run_dir = Path(run_dir).resolve()
    _, cfg = outer.prepare_run_dir(cfg, run_dir, resume, settings)
    started = connect(address, workers)
    pool, evaluator, theta_ref, start = launch(cfg, run_dir, workers, tasks_per_worker,
                                               max_staleness, single_thread)
    deadline = time.monotonic() + hours * 3600 if hours else math.inf
    last_step = start + steps if steps is not None else None
    log = open(run_dir / "metrics.jsonl", "a", buffering=1)  # a killed run keeps its lines
    driver = Driver(pool, evaluator, log, theta_ref, start,
                    time.monotonic() if resume else -math.inf)
    bar = tqdm(disable=not progress, unit="step", desc="meta-train (ray)", initial=start,
               total=last_step)
    with outer.stop_gracefully(run_dir):
        try:
            while time.monotonic() < deadline and (last_step is None or driver.step < last_step):
                check_stop()  # SIGTERM or Ctrl-C: the final checkpoint below
                driver.evaluate(cfg.eval_every_s)
                ready, _ = ray.wait(list(pool.pending), num_returns=1, timeout=1.0)
                row = driver.receive(ready[0]) if ready else None
                if row is None:
                    continue
                bar.set_postfix_str(outer.progress_text(row, deadline))
                bar.update(row["step"] - bar.n)
                if on_result is not None:
                    on_result(pool, row)
        finally:
            bar.close()
            state = driver.finish()
            if started:
                ray.shutdown()
            outer.plot_run(run_dir)
    return state
