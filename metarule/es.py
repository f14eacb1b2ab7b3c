"""Meta-training by evolution strategies over a subspace of theta (`meta-train --estimator es|pes`).

The rule's inner loop is chaotic in theta, so reparameterisation gradients carry information over
~12 inner steps only, while an ES difference of the objective at the horizon of use measures
theta's effect whatever the path. The search strategies are evosax's (ask/tell over z, the
subspace coordinates of metarule.subspace); what is ours is the task side:

- ES: every generation draws one group of tasks (one dataset and base-model shape) from (seed,
  generation). Every member of the population trains those tasks' base models from the same
  initialisation on the same unlabeled batches for H inner steps and is scored by the
  meta-objective averaged over `draws` support/query draws (App. H.2). Members differ in theta
  only, so an antithetic pair's difference (or a population's ranking) measures theta alone.
  H grows from horizon[0] to horizon[1] over horizon_steps generations, in multiples of
  horizon_quantum so that few programs compile.
- PES (Vicol et al. 2021, evosax's PersistentES): the members' base models persist across
  truncations of `truncation` inner steps, with perturbations accumulated, until horizon[1] inner
  steps; then a new group of tasks starts.

Members are independent given z, so the Ray backend spreads them over workers.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metarule import catalog, inner, outer, subspace, truncated
from metarule.config import ConfigError
from metarule.outer import MetaTrainConfig
from metarule.runtime import all_finite, check_stop, enable_compilation_cache
from metarule.tasks import TaskSampler

ESTIMATORS = ("es", "pes")
STRATEGIES = ("open_es", "snes", "cma_es", "sep_cma_es")


@dataclass(frozen=True)
class ESConfig:
    meta: MetaTrainConfig = MetaTrainConfig()   # tasks, start theta, seed, evaluation
    estimator: str = "es"
    strategy: str = "open_es"                   # ES only; PES is evosax's PersistentES
    subspace: tuple[str, ...] = ("merge", "gains", "readout_scales")
    pairs: int = 4                              # population = 2 * pairs (antithetic)
    sigma: float = 0.1                          # in units of each group's scale
    lr: float = 0.05                            # step size on z (open_es, snes, pes)
    optimizer: str = "adam"                     # open_es, pes: "adam" or "sgd" on z
    horizon: tuple[int, int] = (150, 500)       # inner steps scored: first -> last
    horizon_steps: int = 200                    # generations from horizon[0] to horizon[1]
    horizon_quantum: int = 50
    truncation: int = 50                        # PES: inner steps per truncation
    draws: int = 5                              # support/query draws per score (App. H.2)

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {self.estimator!r}; choose from "
                              f"tbptt, {', '.join(ESTIMATORS)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from "
                              f"{', '.join(STRATEGIES)}")
        subspace.parse(",".join(self.subspace))
        if self.pairs < 1 or self.draws < 1 or self.horizon_quantum < 1:
            raise ConfigError("pairs, draws and horizon_quantum must be >= 1")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if not (self.sigma > 0 and self.lr >= 0):
            raise ConfigError(f"sigma must be > 0 and lr >= 0, got {self.sigma}, {self.lr}")
        if not 1 <= self.horizon[0] <= self.horizon[1]:
            raise ConfigError(f"horizon must satisfy 1 <= first <= last, got {self.horizon}")
        if self.estimator == "pes" and not 1 <= self.truncation <= self.horizon[1]:
            raise ConfigError(f"truncation must be in [1, {self.horizon[1]}]")

    @property
    def population(self) -> int:
        return 2 * self.pairs


def horizon_at(cfg: ESConfig, generation: int) -> int:
    """The ES horizon of a generation: linear from horizon[0] to horizon[1], quantised."""
    frac = min(1.0, generation / max(1, cfg.horizon_steps))
    h = cfg.horizon[0] + frac * (cfg.horizon[1] - cfg.horizon[0])
    q = cfg.horizon_quantum
    return int(min(cfg.horizon[1], max(cfg.horizon[0], q * round(h / q))))


def strategy(cfg: ESConfig, dim: int):
    """The evosax strategy and its params for a subspace of `dim` coordinates."""
    import optax
    from evosax.algorithms import CMA_ES, SNES, Open_ES, PersistentES, Sep_CMA_ES
    from evosax.core.fitness_shaping import identity_fitness_shaping_fn

    solution = jnp.zeros(dim)
    std = optax.constant_schedule(cfg.sigma)
    step = getattr(optax, cfg.optimizer)(cfg.lr)
    if cfg.estimator == "pes":
        algo = PersistentES(cfg.population, solution, optimizer=step, std_schedule=std)
        return algo, algo.default_params.replace(T=cfg.horizon[1], K=cfg.truncation)
    if cfg.strategy == "open_es":  # the plain antithetic gradient estimate, then the step
        algo = Open_ES(cfg.population, solution, optimizer=step, std_schedule=std,
                       fitness_shaping_fn=identity_fitness_shaping_fn)
        return algo, algo.default_params
    if cfg.strategy == "snes":
        algo = SNES(cfg.population, solution, optimizer=optax.sgd(cfg.lr / cfg.sigma))
    else:
        algo = {"cma_es": CMA_ES, "sep_cma_es": Sep_CMA_ES}[cfg.strategy](cfg.population, solution)
    return algo, algo.default_params.replace(std_init=jnp.asarray(cfg.sigma))


# ----------------------------------------------------------------------------- the objective

def group_data(cfg: ESConfig, sampler: TaskSampler, index: int, steps: int, part: int = 0):
    """The shared noise of one group of tasks: (group, fresh base models (M, ...), unlabeled
    batches (M, steps, B, D), labeled draws (M, draws, ...)), all from (seed, index, part)."""
    meta = cfg.meta
    group = outer.sample_group(sampler, meta, index)
    params = outer.init_group_params(group, meta)
    rng = np.random.default_rng([meta.seed, index, part, 4])
    batches = np.stack([t.unlabeled_batches(rng, steps) for t in group.tasks])
    draws = [[outer.fixed_size_labeled(t, rng, meta) for _ in range(cfg.draws)]
             for t in group.tasks]
    labeled = truncated.LabeledBatch(*(jnp.asarray(np.array([[d[i] for d in task]
                                                             for task in draws]))
                                       for i in range(4)))
    return group, params, jnp.asarray(batches), labeled


def _task_loss(theta, params, batches, labeled, rule_cfg, activation):
    params = inner.unroll(theta, params, batches, rule_cfg, activation)
    return params, truncated.labeled_objective(params, labeled, activation)


def _member_loss(theta, params, batches, labeled, rule_cfg, activation):
    """A member's base models after the batches (M, ...) and its mean score over tasks."""
    params, losses = jax.vmap(_task_loss, in_axes=(None, 0, 0, 0, None, None))(
        theta, params, batches, labeled, rule_cfg, activation)
    return params, jnp.mean(losses)


class Evaluator:
    """Scores members z on the shared tasks; one per process (a Ray actor on the Ray backend)."""

    def __init__(self, cfg: ESConfig, theta0: dict):
        enable_compilation_cache()
        self.cfg = cfg
        self.space = subspace.make(theta0, cfg.subspace)
        self.sampler = TaskSampler(outer.task_config(cfg.meta), cfg.meta.seed)
        rule_cfg = cfg.meta.rule_cfg

        def scores(zs, params, batches, labeled, activation, shared_params):
            def one(z, p):
                return _member_loss(self.space.to_theta(z), p, batches, labeled, rule_cfg,
                                    activation)
            return jax.vmap(one, in_axes=(0, None if shared_params else 0))(zs, params)
        self._scores = jax.jit(scores, static_argnames=("activation", "shared_params"))

    def es(self, zs: np.ndarray, generation: int) -> np.ndarray:
        """Scores (P,) of members zs (P, dim) at the generation's horizon."""
        group, params, batches, labeled = group_data(self.cfg, self.sampler, generation,
                                                     horizon_at(self.cfg, generation))
        _, losses = self._scores(jnp.asarray(zs), params, batches, labeled, group.activation,
                                 True)
        return np.asarray(losses)

    def pes(self, zs: np.ndarray, params, episode: int, part: int):
        """One truncation of members zs from their base models `params` (P, M, ...), or from
        fresh ones when params is None: (new params, scores (P,))."""
        group, fresh, batches, labeled = group_data(self.cfg, self.sampler, episode,
                                                    self.cfg.truncation, part)
        shared = params is None
        params, losses = self._scores(jnp.asarray(zs), fresh if shared else params, batches,
                                      labeled, group.activation, shared)
        return jax.tree_util.tree_map(np.asarray, params), np.asarray(losses)


# ----------------------------------------------------------------------------- the run state

class ESState(NamedTuple):
    search: object          # the evosax strategy's state (numpy leaves between steps)
    key: np.ndarray         # PRNG key of the next generation
    generation: int
    member_params: object   # PES: the members' persistent base models (P, M, ...), or None
    elapsed_s: float


def theta_of(space: subspace.Subspace, algo, state: ESState) -> dict:
    """The theta at the strategy's mean."""
    return space.to_theta(algo.get_mean(jax.tree_util.tree_map(jnp.asarray, state.search)))


def init_state(cfg: ESConfig, algo, params) -> ESState:
    key, init_key = jax.random.split(jax.random.PRNGKey(cfg.meta.seed))
    mean = jnp.zeros(algo.num_dims)
    search = algo.init(init_key, mean, params)
    return ESState(jax.tree_util.tree_map(np.asarray, search), np.asarray(key), 0, None, 0.0)


def generation_step(cfg: ESConfig, algo, params, state: ESState, evaluate) -> tuple[ESState, dict]:
    """ask -> score every member on shared tasks -> tell. `evaluate(zs, state)` returns
    (scores (P,), new member params or None)."""
    key, ask_key, tell_key = jax.random.split(jnp.asarray(state.key), 3)
    search = jax.tree_util.tree_map(jnp.asarray, state.search)
    zs, search = algo.ask(ask_key, search, params)
    losses, member_params = evaluate(np.asarray(zs), state)
    finite = np.isfinite(losses)
    # A member whose base models diverged scores worse than every finite member.
    scored = np.where(finite, losses, losses[finite].max() + 1.0 if finite.any() else 1.0)
    search, _ = algo.tell(tell_key, zs, jnp.asarray(scored, jnp.float32), search, params)
    metrics = {"step": state.generation, "meta_loss": float(np.mean(scored)),
               "diverged": int((~finite).sum())}
    if cfg.estimator == "pes" or cfg.strategy == "open_es":  # members i and i + pairs: a pair
        metrics["pair_diff_mean_abs"] = float(np.mean(np.abs(scored[:cfg.pairs]
                                                             - scored[cfg.pairs:])))
    new = ESState(jax.tree_util.tree_map(np.asarray, search), np.asarray(key),
                  state.generation + 1, member_params, state.elapsed_s)
    return new, metrics


def local_evaluate(cfg: ESConfig, evaluator: Evaluator):
    """evaluate(zs, state) for generation_step, in this process."""
    def evaluate(zs, state: ESState):
        if cfg.estimator == "es":
            return evaluator.es(zs, state.generation), None
        episode, part = divmod(state.generation, pes_truncations(cfg))
        params, losses = evaluator.pes(zs, state.member_params if part else None, episode, part)
        return losses, (None if part + 1 == pes_truncations(cfg) else params)
    return evaluate


def pes_truncations(cfg: ESConfig) -> int:
    """Truncations per PES episode (horizon[1] inner steps)."""
    return math.ceil(cfg.horizon[1] / cfg.truncation)


# ----------------------------------------------------------------------------- checkpoints

def card(run_dir: Path, cfg: ESConfig, state: ESState) -> dict:
    """outer.card, with the estimator that made theta."""
    return {**outer.card(run_dir, cfg.meta, state.generation, state.elapsed_s),
            "estimator": cfg.estimator, "strategy": cfg.strategy, "subspace": list(cfg.subspace)}


def config_from_dict(d: dict) -> ESConfig:
    def tuples(x):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}
    return ESConfig(**{**tuples(d), "meta": MetaTrainConfig(**tuples(d["meta"]))})


def save_checkpoint(run_dir: Path, cfg: ESConfig, state: ESState, theta: dict) -> None:
    outer._atomic_write(run_dir / "checkpoint.pkl",
                        pickle.dumps({"state": state, "config": dataclasses.asdict(cfg)}))
    catalog.save_rule(run_dir / "theta.npz", theta, cfg.meta.rule_cfg, card(run_dir, cfg, state))


def save_snapshot(run_dir: Path, cfg: ESConfig, state: ESState, space, algo,
                  cpu: outer.CpuClock) -> None:
    """snapshots/theta_GEN.npz every meta.snapshot_every generations (outer.write_snapshot)."""
    if cfg.meta.snapshot_every and not state.generation % cfg.meta.snapshot_every:
        outer.write_snapshot(run_dir, state.generation, cfg.meta.snapshot_every,
                             theta_of(space, algo, state), cfg.meta.rule_cfg,
                             card(run_dir, cfg, state), cpu)


def load_checkpoint(run_dir: Path) -> tuple[ESState, ESConfig]:
    path = run_dir / "checkpoint.pkl"
    try:
        with open(path, "rb") as f:
            blob = pickle.load(f)
        return blob["state"], config_from_dict(blob["config"])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot resume from {path} ({type(e).__name__}); start a new run "
                          f"with another --out") from None


# ----------------------------------------------------------------------------- the run

def ray_evaluate(cfg: ESConfig, theta0: dict, workers: int):
    """evaluate(zs, state) with the members spread over `workers` Ray actors (Ray running)."""
    import ray

    from metarule.distributed import SINGLE_THREAD_XLA

    # One XLA thread per actor, as the TBPTT workers: each holds one CPU of the cluster.
    actor = ray.remote(num_cpus=1)(Evaluator).options(
        runtime_env={"env_vars": {"XLA_FLAGS": SINGLE_THREAD_XLA}})
    pool = [actor.remote(cfg, jax.tree_util.tree_map(np.asarray, theta0)) for _ in range(workers)]

    def evaluate(zs, state: ESState):
        chunks = np.array_split(np.arange(len(zs)), min(workers, len(zs)))
        if cfg.estimator == "es":
            refs = [a.es.remote(zs[c], state.generation) for a, c in zip(pool, chunks)]
            return np.concatenate(ray.get(refs)), None
        episode, part = divmod(state.generation, pes_truncations(cfg))
        prev = state.member_params if part else None
        refs = [a.pes.remote(zs[c], None if prev is None else
                             jax.tree_util.tree_map(lambda x, c=c: x[c], prev), episode, part)
                for a, c in zip(pool, chunks)]
        out = ray.get(refs)
        params = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[p for p, _ in out])
        losses = np.concatenate([s for _, s in out])
        return losses, (None if part + 1 == pes_truncations(cfg) else params)
    return evaluate


def run(cfg: ESConfig, run_dir: str | Path, hours: float | None = None,
        steps: int | None = None, resume: bool = False, progress: bool = True,
        backend: str = "local", workers: int | None = None, address: str | None = None,
        settings: dict | None = None) -> ESState:
    """Run generations until `hours` or `steps` generations (whichever first), checkpointing
    after the first generation and every meta.checkpoint_every_s, evaluating theta at the mean
    every meta.eval_every_s on the validation splits. A resume continues bit-for-bit; `settings`
    may change its RUN_SETTINGS (outer.RUN_SETTINGS: checkpointing and evaluation)."""
    from tqdm import tqdm

    enable_compilation_cache()
    run_dir = Path(run_dir)
    for leftover in run_dir.glob("*.tmp"):  # writes a kill interrupted
        leftover.unlink()
    if resume:
        state, cfg = load_checkpoint(run_dir)
        cfg = dataclasses.replace(cfg, meta=outer.resumed_config(cfg.meta, settings))
        outer.trim_metrics(run_dir, lambda row: outer.held_by_checkpoint(row, state.generation))
    elif (run_dir / "checkpoint.pkl").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or "
                          f"choose another --out")
    else:
        outer.trim_metrics(run_dir, lambda row: False)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    theta0 = catalog.start_theta(cfg.meta.init, cfg.meta.rule_cfg,
                                 jax.random.PRNGKey(cfg.meta.seed))
    space = subspace.make(theta0, cfg.subspace)
    algo, params = strategy(cfg, space.dim)
    if not resume:
        state = init_state(cfg, algo, params)
    started_ray = False
    if backend == "ray":
        from metarule import distributed
        started_ray = distributed.connect(address, workers)
        evaluate = ray_evaluate(cfg, theta0, workers or 2)
    else:
        evaluate = local_evaluate(cfg, Evaluator(cfg, theta0))
    held_out = outer.held_out_datasets(cfg.meta)
    meta = cfg.meta
    deadline = time.monotonic() + hours * 3600 if hours else math.inf
    last_step = state.generation + steps if steps is not None else None
    t0, elapsed0 = time.monotonic(), state.elapsed_s
    saved = outer.Saved(state.generation, -math.inf)  # the first follows the first generation
    last_eval = -math.inf if (not resume and meta.eval_every_s > 0) else time.monotonic()
    log = open(run_dir / "metrics.jsonl", "a", buffering=1)
    bar = tqdm(disable=not progress, unit="gen",
               desc=f"meta-train {cfg.estimator} (compiling the first generation)",
               initial=state.generation)
    last_compiled = state.generation + 1
    cpu = outer.CpuClock(run_dir)
    with outer.stop_gracefully(run_dir):
        try:
            while time.monotonic() < deadline and (last_step is None
                                                   or state.generation < last_step):
                check_stop()  # SIGTERM or Ctrl-C: the final checkpoint below
                if time.monotonic() - last_eval >= meta.eval_every_s > 0:
                    _evaluate_mean(run_dir, cfg, space, algo, state, held_out, log)
                    last_eval = time.monotonic()
                save_snapshot(run_dir, cfg, state, space, algo, cpu)
                t_gen = time.monotonic()
                state, metrics = generation_step(cfg, algo, params, state, evaluate)
                state = state._replace(elapsed_s=elapsed0 + time.monotonic() - t0)
                metrics.update(kind="train", time_s=round(state.elapsed_s, 1),
                               cpu_s=round(cpu.seconds(), 1),
                               members_per_s=round(cfg.population / (time.monotonic() - t_gen), 3))
                log.write(json.dumps(metrics) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['meta_loss']:.3f}")
                if state.generation == last_compiled:
                    outer.restart_rate(bar)
                if outer.checkpoint_due(meta, state.generation, saved, time.monotonic()):
                    save_checkpoint(run_dir, cfg, state, theta_of(space, algo, state))
                    saved = outer.Saved(state.generation, time.monotonic())
        finally:
            bar.close()
            log.close()
            save_checkpoint(run_dir, cfg, state, theta_of(space, algo, state))
            save_snapshot(run_dir, cfg, state, space, algo, cpu)  # the last one too
            outer.plot_run(run_dir)
            if started_ray:
                import ray
                ray.shutdown()
    return state


def _evaluate_mean(run_dir, cfg, space, algo, state, held_out, log) -> None:
    """Continuous evaluation of theta at the mean on the validation splits; theta_best.npz."""
    theta = theta_of(space, algo, state)
    if not all_finite(theta):
        return
    evals = outer.evaluate_theta(theta, cfg.meta, held_out)
    for row in evals:
        log.write(json.dumps({**row, "step": state.generation,
                              "time_s": round(state.elapsed_s, 1)}) + "\n")
    outer.keep_best(run_dir, theta, cfg.meta.rule_cfg, card(run_dir, cfg, state),
                    state.generation, evals)
