"""The staged recipe (`metarule meta-train --recipe staged`): evolution strategies over a
subspace of theta first, then truncated backprop on the whole of theta from what the first stage
chose.

ES resolves the few directions that matter at the horizon of use (the merge weights, module
gains and readout scales; docs/meta_training.md), which truncated gradients cannot see through
the chaotic inner loop; truncated backprop then adjusts every coordinate from there. Each stage
is an ordinary run in its own folder (RUN/es, RUN/tbptt) with its checkpoint, metrics and plots,
so a stopped recipe resumes where it stopped: a finished stage is marked by RUN/STAGE/done.json
and skipped. The wall-clock budget is split between the stages by `es_share`; a stage's budget
left on resume is its share less the time its checkpoint has recorded. Stage 2 starts from
RUN/es/theta_best.npz (chosen on the validation rows) when continuous evaluation wrote one,
else from RUN/es/theta.npz; RUN/theta.npz is the final rule.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from metarule import catalog, es, outer
from metarule.config import ConfigError
from metarule.outer import MetaTrainConfig

STAGES = ("es", "tbptt")


@dataclass(frozen=True)
class StagedConfig:
    es: es.ESConfig              # stage 1; its meta config gives the tasks and the start
    tbptt: MetaTrainConfig       # stage 2; its init is replaced by stage 1's result
    es_share: float = 0.5        # fraction of the hours stage 1 gets

    def __post_init__(self):
        if not 0 < self.es_share < 1:
            raise ConfigError(f"es_share must be in (0, 1), got {self.es_share}")
        if self.es.estimator != "es":
            raise ConfigError("the staged recipe's first stage is --estimator es")


def stage_start(es_dir: Path) -> Path:
    """What stage 2 starts from: the validation-chosen theta of stage 1, else its last."""
    best = es_dir / "theta_best.npz"
    return best if best.exists() else es_dir / "theta.npz"


def _elapsed_s(stage: str, stage_dir: Path) -> float:
    if not (stage_dir / "checkpoint.pkl").exists():
        return 0.0
    load = es.load_checkpoint if stage == "es" else outer.load_checkpoint
    return float(load(stage_dir)[0].elapsed_s)


def run(cfg: StagedConfig, run_dir: str | Path, hours: float, resume: bool = False,
        progress: bool = True, settings: dict | None = None) -> Path:
    """Run (or, with resume, continue) both stages within `hours` of wall time; returns the
    path of the final rule, RUN/theta.npz."""
    run_dir = Path(run_dir)
    if not resume and any((run_dir / s).exists() for s in STAGES):
        raise ConfigError(f"{run_dir} already holds a staged run; pass --resume to continue it "
                          f"or choose another --out")
    if resume and not (run_dir / "recipe.json").exists():
        raise ConfigError(f"{run_dir} holds no staged run to resume (no recipe.json); start "
                          f"one without --resume")
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.json").write_text(json.dumps(
            {"stages": list(STAGES), "es_share": cfg.es_share, "hours": hours,
             "es": dataclasses.asdict(cfg.es), "tbptt": dataclasses.asdict(cfg.tbptt)},
            indent=1))
    budgets = {"es": cfg.es_share * hours, "tbptt": (1 - cfg.es_share) * hours}
    for stage in STAGES:
        stage_dir = run_dir / stage
        if (stage_dir / "done.json").exists():
            continue
        started = (stage_dir / "checkpoint.pkl").exists()
        left = budgets[stage] - _elapsed_s(stage, stage_dir) / 3600
        if left > 0:
            if stage == "es":
                es.run(cfg.es, stage_dir, hours=left, resume=started, progress=progress,
                       settings=settings)
            else:
                start = stage_start(run_dir / "es")
                stage_cfg = dataclasses.replace(cfg.tbptt, init=str(start))
                outer.run(stage_cfg, stage_dir, hours=left, resume=started, progress=progress,
                          settings=settings)
        (stage_dir / "done.json").write_text(json.dumps({"hours": budgets[stage]}))
    final = catalog.read_rule_file(run_dir / "tbptt" / "theta.npz")
    catalog.save_rule(run_dir / "theta.npz", final.theta, final.cfg,
                      {**final.card, "name": run_dir.name, "recipe": "staged",
                       "es_start": str(stage_start(run_dir / "es"))})
    return run_dir / "theta.npz"
