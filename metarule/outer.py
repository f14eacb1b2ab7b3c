"""Meta-training on one machine (Algorithm 1, Section 4, App. H.2).

The meta-batch is a group of M tasks that share one shape (dataset input size and base-model
architecture) so that they are vmapped together. Each task keeps its base-model state across
truncations; each truncation unrolls U applications of the rule (U from the curriculum), takes
the truncated meta-gradient, and continues from the final state. When the group's inner-step
budget is spent, a new group (new dataset, architecture and tasks) is drawn.

Everything is a pure function of (seed, step): the data of step s comes from
np.random.default_rng([seed, s]); group g's tasks from np.random.default_rng([seed, g, ...]).
A checkpoint therefore holds theta, the Adam state, the step, the group index and the tasks'
base-model states, and resuming continues the uninterrupted run exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metarule import base_model, catalog, memory, truncated
from metarule.config import BaseModelConfig, ConfigError, RuleConfig, preset as get_preset
from metarule.runtime import (Terminated, all_finite, check_stop, enable_compilation_cache,
                              stop_signals)
from metarule.tasks import AUG_TARGETS, Task, TaskConfig, TaskSampler


@dataclass(frozen=True)
class MetaTrainConfig:
    preset: str = "cpu"
    init: str = catalog.DEFAULT_INIT
    seed: int = 0
    tasks_per_step: int = 4                 # M, vmapped
    # Truncation length U ~ uniform[lo, hi]; [2, 4] -> [8, 15] over the curriculum (App. H.2).
    unroll_start: tuple[int, int] = (2, 4)
    unroll_end: tuple[int, int] = (8, 15)
    curriculum_steps: int = 50_000
    # Inner-step budget of a group of tasks, uniform in [lo, hi].
    budget: tuple[int, int] = (100, 1000)
    # Adam with a piecewise-constant schedule (3e-4 -> 1e-4 -> 2e-5 in the paper).
    lr_values: tuple[float, ...] = (3e-4, 1e-4, 2e-5)
    lr_boundaries: tuple[int, ...] = (100_000, 150_000)
    clip_norm: float = 5.0
    # Conditioning of the meta-gradient step; the defaults are the paper's plain recipe.
    relative_steps: bool = False            # Adam steps scaled by each theta leaf's RMS
    task_clip: float = 0.0                  # clip each task's gradient norm first (0: off)
    aug_weight: float = 1.0                 # weight of the augmentation regression targets
    draws: int = 1                          # support/query draws the meta-objective averages
    ways: tuple[int, ...] = (10, 13, 14, 17, 20, 30)
    shots: int = 10                         # support and query examples per class at max ways
    datasets: tuple[str, ...] = ("glyphs14", "patches16", "stamps16")
    dataset_weights: tuple[float, ...] = (0.5, 0.25, 0.25)
    depths: tuple[int, ...] = (2, 3, 4, 5)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    # A checkpoint follows a run's first step, then every N steps or S seconds, whichever first.
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int = 0         # 0: on time only
    eval_every_s: float = 600.0             # 0 switches continuous evaluation off
    snapshot_every: int = 0                 # keep theta every N outer steps (0: never)
    eval_datasets: tuple[str, ...] = ("mnist14", "fashion_mnist14", "polarity")
    eval_steps: int = 200                   # inner steps of a fresh base model per evaluation
    eval_seeds: int = 5
    eval_widths: tuple[int, ...] = (128, 128, 128, 128)

    def __post_init__(self):
        if self.tasks_per_step < 1:
            raise ConfigError("tasks_per_step must be >= 1")
        for lo, hi in (self.unroll_start, self.unroll_end, self.budget):
            if not 1 <= lo <= hi:
                raise ConfigError(f"ranges must satisfy 1 <= lo <= hi, got ({lo}, {hi})")
        if len(self.lr_values) != len(self.lr_boundaries) + 1:
            raise ConfigError("lr_values needs exactly one more entry than lr_boundaries")
        if min(self.lr_values) < 0 or (0 in self.lr_values and any(self.lr_values)):
            raise ConfigError("lr_values must be all > 0, or all 0 (a frozen-theta control)")
        if self.clip_norm <= 0:
            raise ConfigError("clip_norm must be > 0")
        if not (self.task_clip >= 0 and self.aug_weight >= 0 and self.draws >= 1):
            raise ConfigError(f"need task_clip >= 0, aug_weight >= 0 and draws >= 1, got "
                              f"{self.task_clip}, {self.aug_weight}, {self.draws}")
        if not self.checkpoint_every_s >= 0:  # also refuses NaN
            raise ConfigError(f"checkpoint_every_s must be >= 0 seconds, got "
                              f"{self.checkpoint_every_s}")
        if self.checkpoint_every_steps < 0:
            raise ConfigError(f"checkpoint_every_steps must be >= 0 (0: on time only), got "
                              f"{self.checkpoint_every_steps}")

    @property
    def rule_cfg(self) -> RuleConfig:
        return get_preset(self.preset)

    @property
    def max_ways(self) -> int:
        return max(*self.ways, TaskConfig.named_ways)

    @property
    def k(self) -> int:
        return self.shots * self.max_ways

    @property
    def n_targets(self) -> int:
        return self.max_ways + len(AUG_TARGETS)


# What an hour on 2 CPU cores can afford: one small base-model shape per dataset (so few
# compilations), 10-way tasks, a faster curriculum and a larger Adam step than the paper's.
CPU_OVERRIDES = dict(widths=(64,), depths=(2,), ways=(10,), unroll_end=(6, 10),
                     curriculum_steps=1000, budget=(100, 400), lr_values=(1e-3, 3e-4, 1e-4),
                     lr_boundaries=(2000, 6000))


# How a run is watched and saved, not what it learns: a resumed run may change them.
RUN_SETTINGS = ("checkpoint_every_s", "checkpoint_every_steps", "eval_every_s", "snapshot_every")


def resumed_config(saved: MetaTrainConfig, settings: dict | None) -> MetaTrainConfig:
    """The checkpoint's config with new RUN_SETTINGS; anything else would change the run."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    if unknown := sorted(set(settings) - set(RUN_SETTINGS)):
        raise ConfigError(f"a resumed run keeps its config; only {', '.join(RUN_SETTINGS)} may "
                          f"change (got {', '.join(unknown)})")
    return dataclasses.replace(saved, **settings)


def default_config(preset: str = "cpu", **overrides) -> MetaTrainConfig:
    """The paper's meta-training settings, or for the `cpu` preset CPU_OVERRIDES on top."""
    base = dict(CPU_OVERRIDES) if preset == "cpu" else {}
    return MetaTrainConfig(preset=preset, **{**base, **overrides})


def optimizer(cfg: MetaTrainConfig) -> optax.GradientTransformation:
    """Clip at norm 5, then Adam on the paper's step schedule (App. H.2).

    The schedule holds each piece's value itself, so a schedule of zeros is valid: it keeps theta
    where it started, a control run that draws the same tasks as a real one.
    With relative_steps, each leaf's step is also scaled by its RMS: Adam moves every coordinate
    by about the learning rate, which moves the merge weights (RMS ~5) ~35x less, relative to
    their size, than the convolution weights (RMS ~0.15); the learning rate then is a fraction of
    each leaf's size.
    """
    schedule = optax.join_schedules([optax.constant_schedule(v) for v in cfg.lr_values],
                                    list(cfg.lr_boundaries))
    relative = [optax.scale_by_param_block_rms()] if cfg.relative_steps else []
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(schedule), *relative)


def unroll_length(cfg: MetaTrainConfig, step: int, rng: np.random.Generator) -> int:
    frac = min(1.0, step / max(1, cfg.curriculum_steps))
    lo = round(cfg.unroll_start[0] + frac * (cfg.unroll_end[0] - cfg.unroll_start[0]))
    hi = round(cfg.unroll_start[1] + frac * (cfg.unroll_end[1] - cfg.unroll_start[1]))
    return int(rng.integers(lo, hi + 1))


# ----------------------------------------------------------------------------- task groups

class Group(NamedTuple):
    index: int
    tasks: list[Task]
    activation: str
    budget: int


def task_config(cfg: MetaTrainConfig) -> TaskConfig:
    return TaskConfig(datasets=cfg.datasets, dataset_weights=cfg.dataset_weights,
                      ways=cfg.ways, dataset_ways=tuple((d, cfg.ways) for d in cfg.datasets),
                      depths=cfg.depths, widths=cfg.widths, inner_batch=cfg.rule_cfg.inner_batch,
                      k_per_class=cfg.shots)


def sample_group(sampler: TaskSampler, cfg: MetaTrainConfig, index: int) -> Group:
    """M tasks of one dataset and one architecture (the lead task's), drawn from (seed, index)."""
    rng = np.random.default_rng([cfg.seed, index, 1])
    lead = sampler.sample(rng=rng)
    tasks = [lead] + [dataclasses.replace(sampler.sample(rng=rng, dataset=lead.dataset),
                                          hidden=lead.hidden)
                      for _ in range(cfg.tasks_per_step - 1)]
    budget = int(rng.integers(cfg.budget[0], cfg.budget[1] + 1))
    return Group(index, tasks, "relu", budget)


def init_group_params(group: Group, cfg: MetaTrainConfig) -> base_model.Params:
    """Fresh base models, stacked on a leading task axis."""
    mcfg = BaseModelConfig(group.tasks[0].input_dim, hidden=group.tasks[0].hidden)
    memory.check_fits(mcfg.widths, cfg.rule_cfg, f"meta-training {len(group.tasks)} tasks at once",
                      copies=len(group.tasks))
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed * 1_000_003 + group.index),
                            len(group.tasks))
    return jax.vmap(lambda k: base_model.init(k, mcfg))(keys)


def fixed_size_labeled(task: Task, rng: np.random.Generator, cfg: MetaTrainConfig):
    """Support and query sets of exactly K = shots * max_ways rows and n_targets columns for any
    number of ways, so that every task of a shape compiles once. Rows go round robin over the
    classes (balanced); the one-hot is zero-padded, which leaves the centred, normalised targets
    of the meta-objective unchanged."""
    per_class = 2 * math.ceil(cfg.k / task.ways)
    x, y = task.labeled(rng, per_class)
    half = len(x) // 2
    pad = np.zeros((len(y), cfg.n_targets - y.shape[1]), np.float32)
    y = np.concatenate([y[:, :task.ways], pad, cfg.aug_weight * y[:, task.ways:]], axis=1)
    return x[:cfg.k], y[:cfg.k], x[half:half + cfg.k], y[half:half + cfg.k]


def step_data(group: Group, cfg: MetaTrainConfig, step: int, unroll: int):
    """Unlabeled batches (M, U, B, N^0) and labeled draws (M, K, ...), or (M, D, K, ...) for
    cfg.draws = D > 1."""
    rng = np.random.default_rng([cfg.seed, step, 2])
    batches = np.stack([t.unlabeled_batches(rng, unroll) for t in group.tasks])
    if cfg.draws == 1:
        labeled = [fixed_size_labeled(t, rng, cfg) for t in group.tasks]
    else:
        labeled = [[np.stack(a) for a in zip(*(fixed_size_labeled(t, rng, cfg)
                                               for _ in range(cfg.draws)))]
                   for t in group.tasks]
    labeled = truncated.LabeledBatch(*(jnp.asarray(np.stack(a)) for a in zip(*labeled)))
    return jnp.asarray(batches), labeled


def group_gradient(theta, params, batches, labeled, cfg: MetaTrainConfig, activation: str):
    """(mean loss, final params, meta-gradient) of a truncation on a group of tasks. With
    cfg.task_clip, each task's gradient (of its own mean loss) is clipped to that norm before
    the mean, so that one task's exploding gradient cannot set the step of all."""
    loss, params, grad, _ = truncated.truncated_grad(theta, params, batches, labeled,
                                                     cfg.rule_cfg, activation,
                                                     per_task=cfg.task_clip > 0)
    if cfg.task_clip > 0:
        n_tasks = batches.shape[0]
        norms = n_tasks * jax.vmap(optax.tree.norm)(grad)
        factor = jnp.minimum(1.0, cfg.task_clip / jnp.maximum(norms, 1e-30))
        grad = jax.tree_util.tree_map(lambda g: jnp.tensordot(factor, g, axes=1), grad)
    return loss, params, grad


# ----------------------------------------------------------------------------- training state

class TrainState(NamedTuple):
    theta: dict
    opt_state: optax.OptState
    step: int
    group_index: int
    group_start: int           # outer step at which the current group was drawn
    inner_steps: int           # inner steps the current group has taken
    params: base_model.Params  # the group's base models (leading task axis)
    dropped: int               # non-finite meta-gradients dropped so far
    elapsed_s: float


def init_state(cfg: MetaTrainConfig, sampler: TaskSampler) -> tuple[TrainState, Group]:
    theta = catalog.start_theta(cfg.init, cfg.rule_cfg, jax.random.PRNGKey(cfg.seed))
    group = sample_group(sampler, cfg, 0)
    state = TrainState(theta, optimizer(cfg).init(theta), 0, 0, 0, 0,
                       init_group_params(group, cfg), 0, 0.0)
    return state, group


def train_step(state: TrainState, group: Group, cfg: MetaTrainConfig, sampler: TaskSampler
               ) -> tuple[TrainState, Group, dict]:
    """One outer step: a truncation on every task of the group, one Adam step on theta."""
    rng = np.random.default_rng([cfg.seed, state.step, 3])
    unroll = unroll_length(cfg, state.step, rng)
    batches, labeled = step_data(group, cfg, state.step, unroll)
    loss, params, grad = group_gradient(state.theta, state.params, batches, labeled, cfg,
                                        group.activation)
    finite = all_finite(grad) and all_finite(params)
    grad_norm = float(optax.tree.norm(grad)) if finite else float("nan")
    theta, opt_state, dropped = state.theta, state.opt_state, state.dropped
    if finite:
        updates, opt_state = optimizer(cfg).update(grad, opt_state, theta)
        theta = optax.apply_updates(theta, updates)
    else:  # dropped and counted, never applied; the tasks restart from fresh base models
        dropped += 1
    inner_steps = state.inner_steps + unroll
    metrics = {"step": state.step, "meta_loss": float(loss), "grad_norm": grad_norm,
               "unroll": unroll, "dataset": group.tasks[0].dataset,
               "width": group.tasks[0].hidden[0], "depth": len(group.tasks[0].hidden),
               "inner_step": inner_steps, "dropped": dropped}
    group_index, group_start = state.group_index, state.group_start
    if inner_steps >= group.budget or not finite:
        group_index += 1
        group_start, inner_steps = state.step + 1, 0
        group = sample_group(sampler, cfg, group_index)
        params = init_group_params(group, cfg)
    state = TrainState(theta, opt_state, state.step + 1, group_index, group_start, inner_steps,
                       params, dropped, state.elapsed_s)
    return state, group, metrics


# ----------------------------------------------------------------------------- checkpoints

def _atomic_write(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Saved(NamedTuple):
    """When the latest checkpoint was written."""
    step: int
    time: float  # time.monotonic(); -inf for a run that has none yet


def checkpoint_due(cfg: MetaTrainConfig, step: int, saved: Saved, now: float) -> bool:
    """Whether outer step `step` (steps done) calls for a checkpoint: a new run's first step
    does (its `saved` is (0, -inf)), so that a kill at any moment after it leaves a run to
    resume; then every cfg.checkpoint_every_steps steps or cfg.checkpoint_every_s seconds,
    whichever comes first. A step already saved never is."""
    if step == saved.step:
        return False
    every = cfg.checkpoint_every_steps
    return (every > 0 and step - saved.step >= every) or now - saved.time >= cfg.checkpoint_every_s


def trim_metrics(run_dir: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite metrics.jsonl atomically with the rows `keep(row)` accepts, so that a resumed
    run, which redoes the steps after its checkpoint, logs none of them twice. A line torn by a
    kill mid-write is dropped too."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(row):
            kept.append(line + "\n")
    _atomic_write(path, "".join(kept).encode())


def held_by_checkpoint(row: dict, step: int) -> bool:
    """Whether a metrics row logs work that a checkpoint at outer step `step` holds.

    A local training row's step is the step it took (from s to s + 1); a Ray row's is theta's
    version after its push, which completed that version if `applied`; an evaluation row's is
    the version it scored.
    """
    if row["step"] != step:
        return row["step"] < step
    return row.get("applied", row["kind"] == "eval")


def card(run_dir: Path, cfg: MetaTrainConfig, outer_steps: int, seconds: float) -> dict:
    """What a rule file of this run says about how its theta was made."""
    return {"name": run_dir.name, "meta_trained": True, "outer_steps": outer_steps,
            "preset": cfg.preset, "init": cfg.init, "seconds": round(seconds)}


def save_checkpoint(run_dir: Path, state: TrainState, cfg: MetaTrainConfig) -> None:
    """checkpoint.pkl (whole state) and theta.npz (a loadable rule), each written atomically."""
    host = jax.tree_util.tree_map(np.asarray, state)
    _atomic_write(run_dir / "checkpoint.pkl",
                  pickle.dumps({"state": host, "config": dataclasses.asdict(cfg)}))
    catalog.save_rule(run_dir / "theta.npz", state.theta, cfg.rule_cfg,
                      card(run_dir, cfg, state.step, state.elapsed_s))


def write_snapshot(run_dir: Path, step: int, every: int, theta, rule_cfg: RuleConfig,
                   rule_card: dict, cpu: CpuClock | None = None) -> None:
    """snapshots/theta_STEP.npz every `every` steps (0: never): theta along training, for
    curves evaluated after the run. A step already kept (the last one before a resume) is not
    written again. Used by truncated backprop and by ES/PES."""
    path = run_dir / "snapshots" / f"theta_{step:06d}.npz"
    if not every or step % every or path.exists():
        return
    path.parent.mkdir(exist_ok=True)
    catalog.save_rule(path, theta, rule_cfg,
                      {**rule_card, "name": f"{run_dir.name}@{step}", "meta_trained": step > 0,
                       **({"cpu_seconds": round(cpu.seconds(), 1)} if cpu else {})})


def save_snapshot(run_dir: Path, state: TrainState, cfg: MetaTrainConfig,
                  cpu: CpuClock | None = None) -> None:
    write_snapshot(run_dir, state.step, cfg.snapshot_every, state.theta, cfg.rule_cfg,
                   card(run_dir, cfg, state.step, state.elapsed_s), cpu)


def keep_best(run_dir: Path, theta, rule_cfg: RuleConfig, rule_card: dict, step: int,
              evals: list[dict]) -> None:
    """Write theta_best.npz when the mean validation meta-objective (evaluate_theta) is the
    lowest so far; a rule to ship is chosen by it, never by the test split."""
    score = float(np.mean([row["meta_objective"] for row in evals]))
    best_path = run_dir / "best.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else {}
    if best.get("validation_meta_objective", math.inf) <= score:
        return
    catalog.save_rule(run_dir / "theta_best.npz", theta, rule_cfg,
                      {**rule_card, "validation_meta_objective": score,
                       "selected_by": "lowest mean validation meta-objective of the run's "
                                      "continuous evaluations (data.validation_split)"})
    _atomic_write(best_path, json.dumps({"step": step, "validation_meta_objective": score,
                                         "evals": evals}).encode())


def load_checkpoint(run_dir: Path) -> tuple[TrainState, MetaTrainConfig]:
    path = run_dir / "checkpoint.pkl"
    fresh = "start a new run with a new --out"
    try:
        with open(path, "rb") as f:
            blob = pickle.load(f)
    except OSError as e:
        raise ConfigError(f"cannot resume from {path}: {e.strerror}; {fresh}") from None
    except Exception as e:  # unpickling damaged bytes can raise almost any error
        raise ConfigError(f"cannot resume from {path}: unreadable ({type(e).__name__}); "
                          f"{fresh}") from None
    if not (isinstance(blob, dict) and isinstance(blob.get("config"), dict)
            and isinstance(blob.get("state"), TrainState)):
        raise ConfigError(f"{path} is not a metarule checkpoint (no config and state); {fresh}")
    try:
        cfg = MetaTrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in blob["config"].items()})
    except TypeError as e:
        raise ConfigError(f"{path} holds a config this version cannot read ({e}); {fresh}") \
            from None
    state = jax.tree_util.tree_map(jnp.asarray, blob["state"])
    state = state._replace(step=int(state.step), group_index=int(state.group_index),
                           group_start=int(state.group_start),
                           inner_steps=int(state.inner_steps), dropped=int(state.dropped),
                           elapsed_s=float(state.elapsed_s))
    return state, cfg


# ----------------------------------------------------------------------------- continuous evaluation

def few_shot_objective(params, x: np.ndarray, y: np.ndarray, num_classes: int, shots: int,
                       seed: int) -> float:
    """The meta-objective (Eq. 2) of a trained base model on a class-balanced `shots`-shot
    support batch and a disjointly seeded query batch drawn from (x, y)."""
    from metarule import evaluate, meta_objective

    idx_a = evaluate.sample_shots(y, shots, seed)
    idx_b = evaluate.sample_shots(y, shots, seed + 10_000)
    y_a, y_b = (np.eye(num_classes, dtype=np.float32)[y[i]] for i in (idx_a, idx_b))
    return float(meta_objective.meta_objective(params, jnp.asarray(x[idx_a]), jnp.asarray(y_a),
                                               jnp.asarray(x[idx_b]), jnp.asarray(y_b)))


def held_out_datasets(cfg: MetaTrainConfig) -> dict:
    """The validation splits (data.validation_split) of cfg.eval_datasets: what continuous
    evaluation and the best theta read."""
    from metarule import data
    return {name: data.validation_split(data.load(name)) for name in cfg.eval_datasets}


def evaluate_theta(theta, cfg: MetaTrainConfig, datasets: dict, n_val: int = 2000) -> list[dict]:
    """Fresh base models trained by theta on datasets held out from meta-training: 10-shot
    accuracy (logistic readout) and the meta-objective (10-way 10-shot ridge), over seeds.

    `datasets` are data.ValidationSplit: the models train on the rest of the training
    split and are scored on its validation rows, so nothing chosen from these numbers has seen
    a test split.
    """
    from metarule import evaluate
    from metarule.train import train_base_model

    current = catalog.Rule(theta, cfg.rule_cfg, "current", {})
    out = []
    for name, ds in datasets.items():
        x_val, y_val = ds.x_val[:n_val], ds.y_val[:n_val]
        objectives = []

        def fit(x_lab, y_lab, seed):
            params = train_base_model(current, ds.x_train, cfg.eval_steps, cfg.eval_widths,
                                      seed=seed, progress=False)
            objectives.append(few_shot_objective(params, x_val, y_val, ds.num_classes,
                                                 cfg.shots, seed))
            return evaluate.model_embed_fn(params)

        res = evaluate.fitted_few_shot_accuracy(fit, ds.x_train, ds.y_train, x_val, y_val,
                                                shots=cfg.shots, seeds=cfg.eval_seeds)
        out.append({"kind": "eval", "dataset": name, "accuracy": res.mean,
                    "accuracy_stderr": res.stderr, "accuracies": res.accuracies,
                    "meta_objective": float(np.mean(objectives)),
                    "meta_objective_stderr": float(np.std(objectives, ddof=1)
                                                   / math.sqrt(len(objectives)))})
    return out


# ----------------------------------------------------------------------------- the run

def plot_run(run_dir: Path) -> Path:
    """meta-objective over training for the training tasks and the held-out sets (Fig. 3)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = np.array([r["step"] for r in train])
        loss = np.array([r["meta_loss"] for r in train])
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        axes[0].plot(steps, loss, ".", alpha=0.15, color="gray")
        axes[0].plot(steps[window - 1:], smooth, label=f"training tasks (mean of {window})")
    for i, name in enumerate(sorted({r["dataset"] for r in evals})):
        pts = [r for r in evals if r["dataset"] == name]
        color = f"C{i + 1}"  # one colour per held-out set in both panels
        axes[0].errorbar([r["step"] for r in pts], [r["meta_objective"] for r in pts],
                         [r["meta_objective_stderr"] for r in pts], marker="o", color=color,
                         label=f"{name} (held out)")
        axes[1].errorbar([r["step"] for r in pts], [r["accuracy"] for r in pts],
                         [r["accuracy_stderr"] for r in pts], marker="o", color=color,
                         label=name)
    axes[0].set(xlabel="outer step", ylabel="meta-objective (lower is better)")
    axes[1].set(xlabel="outer step", ylabel="10-shot accuracy (held out)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / "meta_training.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def progress_text(row: dict, deadline: float) -> str:
    """The progress bar's summary of a training row, with the Ray backend's drop and
    replacement counts where the row has them, and the time left."""
    left = deadline - time.monotonic()
    return (f"loss {row['meta_loss']:.3f} |g| {row['grad_norm']:.3g} "
            f"tasks/s {row['tasks_per_s']} nan {row['dropped']}"
            + "".join(f" {k} {row[k]}" for k in ("stale", "replaced") if k in row)
            + (f" left {left / 60:.0f}m" if math.isfinite(left) else ""))


def restart_rate(bar) -> None:
    """After the first step, which compiled: rate and ETA count training steps from here on."""
    if bar.disable:
        return
    n = bar.n
    bar.reset(total=bar.total)
    bar.initial = bar.n = n
    bar.set_description_str(bar.desc.split(" (compiling")[0])


class CpuClock:
    """CPU seconds a run has used (all threads of this process, compiles included), carried
    across resumes through the last `cpu_s` of metrics.jsonl: runs compared at equal compute
    are compared on this clock, whatever else shares the machine."""

    def __init__(self, run_dir: Path):
        self.offset = 0.0
        path = run_dir / "metrics.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line]
            self.offset = max((r["cpu_s"] for r in rows if "cpu_s" in r), default=0.0)
        self.start = time.process_time()

    def seconds(self) -> float:
        return self.offset + time.process_time() - self.start


@contextlib.contextmanager
def stop_gracefully(run_dir: Path):
    """SIGTERM (schedulers, `kill`) ends a run like Ctrl-C: the loop's `check_stop` raises
    between steps, the loop's `finally` writes the final checkpoint, and the run exits (status 1
    from the CLI) saying where the checkpoint is."""
    with stop_signals():
        try:
            yield
        except Terminated:
            raise SystemExit(f"meta-train stopped by SIGTERM; its checkpoint is in {run_dir}") \
                from None


def prepare_run_dir(cfg: MetaTrainConfig, run_dir: Path, resume: bool,
                    settings: dict | None = None) -> tuple[TrainState | None, MetaTrainConfig]:
    """A resume takes the checkpoint's state and config (with new `settings`, RUN_SETTINGS)
    and drops the metrics rows of the steps it will redo; a new run needs a folder that holds
    no run, and starts metrics.jsonl afresh (rows of a run killed before its first checkpoint
    would be logged again). Either removes the temporary files of writes a kill interrupted.
    Writes config.json."""
    for leftover in run_dir.glob("*.tmp"):
        leftover.unlink()
    state = None
    if resume:
        state, saved = load_checkpoint(run_dir)
        cfg = resumed_config(saved, settings)
        trim_metrics(run_dir, lambda row: held_by_checkpoint(row, state.step))
    elif (run_dir / "checkpoint.pkl").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or "
                          f"choose another --out")
    else:
        trim_metrics(run_dir, lambda row: False)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    return state, cfg


def run(cfg: MetaTrainConfig, run_dir: str | Path, hours: float | None = None,
        steps: int | None = None, resume: bool = False, progress: bool = True,
        settings: dict | None = None) -> TrainState:
    """Meta-train until `hours` of wall time or `steps` outer steps (whichever comes first),
    checkpointing after the first step, then as `checkpoint_due` says, and at exit; evaluate
    every cfg.eval_every_s.
    A resume continues the run's own config; `settings` may change its RUN_SETTINGS."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    enable_compilation_cache()  # compiled rules survive restarts
    state, cfg = prepare_run_dir(cfg, run_dir, resume, settings)
    sampler = TaskSampler(task_config(cfg), cfg.seed)
    if not resume:
        state, group = init_state(cfg, sampler)
    else:
        group = sample_group(sampler, cfg, state.group_index)
    held_out = held_out_datasets(cfg)
    deadline = time.monotonic() + hours * 3600 if hours else math.inf
    last_step = state.step + steps if steps is not None else None
    t0, elapsed0 = time.monotonic(), state.elapsed_s
    last_eval = time.monotonic()
    saved = Saved(state.step, time.monotonic() if resume else -math.inf)
    if not resume and cfg.eval_every_s > 0:
        last_eval = -math.inf  # evaluate the starting rule first
    log = open(run_dir / "metrics.jsonl", "a", buffering=1)  # a killed run keeps its lines
    bar = tqdm(disable=not progress, unit="step", desc="meta-train (compiling the first step)",
               initial=state.step)
    last_compiled = state.step + 1
    cpu = CpuClock(run_dir)
    with stop_gracefully(run_dir):
        try:
            while time.monotonic() < deadline and (last_step is None or state.step < last_step):
                check_stop()  # SIGTERM or Ctrl-C: the final checkpoint below
                if time.monotonic() - last_eval >= cfg.eval_every_s > 0:
                    evals = evaluate_theta(state.theta, cfg, held_out)
                    for row in evals:
                        log.write(json.dumps({**row, "step": state.step,
                                              "time_s": round(state.elapsed_s, 1)}) + "\n")
                    keep_best(run_dir, state.theta, cfg.rule_cfg,
                              card(run_dir, cfg, state.step, state.elapsed_s), state.step, evals)
                    last_eval = time.monotonic()
                save_snapshot(run_dir, state, cfg, cpu)
                t_step = time.monotonic()
                state, group, metrics = train_step(state, group, cfg, sampler)
                step_s = time.monotonic() - t_step
                state = state._replace(elapsed_s=elapsed0 + time.monotonic() - t0)
                metrics.update(kind="train", time_s=round(state.elapsed_s, 1),
                               cpu_s=round(cpu.seconds(), 1),
                               tasks_per_s=round(cfg.tasks_per_step / step_s, 2))
                log.write(json.dumps(metrics) + "\n")
                bar.set_postfix_str(progress_text(metrics, deadline))
                bar.update(1)
                if state.step == last_compiled:
                    restart_rate(bar)
                if checkpoint_due(cfg, state.step, saved, time.monotonic()):
                    save_checkpoint(run_dir, state, cfg)
                    saved = Saved(state.step, time.monotonic())
        finally:
            bar.close()
            log.close()
            save_checkpoint(run_dir, state, cfg)
            save_snapshot(run_dir, state, cfg, cpu)  # the last one too
            plot_run(run_dir)
    return state
