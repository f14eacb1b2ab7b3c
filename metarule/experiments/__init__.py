"""The paper's figures as experiments: `metarule experiment NAME` writes results/NAME.json and
results/NAME.png.

Each experiment module defines `SIZES` ("tiny" for tests, "default" for a few minutes on 2 CPU
cores, "full" for the paper's sizes), `FIGURE`, `TITLE`, `CLAIM`, `PAPER` (the paper's setting),
`USES_RULE`, `run(size, ctx) -> dict`, `plot(result, png_path)`, `summary(result) -> list[str]`
(markdown lines for the report) and `reading(result) -> str` (the measurement against the
paper's claim, in words).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

from metarule import catalog, train
from metarule.experiments.common import Context, ExperimentError

EXPERIMENTS = {
    "objective-mismatch": "objective_mismatch",
    "protonets-shuffle": "protonets_shuffle",
    "datasets": "datasets",
    "widths-depths": "widths_depths",
    "activations": "activations",
    "permutation": "permutation",
    "filters": "filters",
    "embeddings": "embeddings",
    "meta-curves": "meta_curves",
}
SIZES = ("tiny", "default", "full")

__all__ = ["EXPERIMENTS", "SIZES", "Context", "ExperimentError", "command_line",
           "module", "run_experiment"]


def module(name: str):
    """The module implementing experiment `name`."""
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment {name!r}; choose one of "
                              f"{', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"metarule.experiments.{EXPERIMENTS[name]}")


def command_line(name: str, size: str, rule_spec: str | None, out: str | Path,
                 run_dir: str | Path | None = None) -> str:
    """The CLI command that reproduces a result (recorded in its JSON)."""
    parts = ["metarule", "experiment", name]
    if run_dir is not None:
        parts.append(str(run_dir))
    if size == "full":
        parts.append("--full")
    elif size == "tiny":
        parts.append("--tiny")
    if rule_spec is not None:
        parts += ["--rule", rule_spec]
    if str(out) != "results":
        parts += ["--out", str(out)]
    return " ".join(parts)


def strict_json(obj):
    """obj with NaN and inf replaced by None, since strict JSON has neither."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run_experiment(name: str, size: str = "default", rule_spec: str | None = None,
                   out: str | Path = "results", run_dir: str | Path | None = None,
                   progress: bool = True) -> dict:
    """Run one experiment, write out/NAME.json and out/NAME.png, return the result.

    Args:
      name: a key of EXPERIMENTS.
      size: "tiny", "default" or "full".
      rule_spec: the rule (`catalog.load_rule` spec); None = `catalog.default_rule_spec()`.
      out: the results folder.
      run_dir: the meta-training run folder (meta-curves only).
      progress: show progress bars.
    """
    mod = module(name)
    if size not in SIZES:
        raise ExperimentError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if (run_dir is None) == (name == "meta-curves"):
        raise ExperimentError("meta-curves needs a RUN_DIR (and only it takes one): "
                              "metarule experiment meta-curves RUN_DIR")
    setting = mod.SIZES[size]
    spec = rule_spec or catalog.default_rule_spec()
    rule = catalog.load_rule(spec) if mod.USES_RULE else None
    ctx = Context(rule=rule, rule_spec=spec, run_dir=Path(run_dir) if run_dir else None,
                  progress=progress)
    header = {"experiment": name, "figure": mod.FIGURE, "size": size,
              "command": command_line(name, size, rule_spec, out, run_dir),
              "date": train.now(), "setting": dataclasses.asdict(setting),
              "rule": train.rule_info(rule, spec) if rule is not None else None}
    result = strict_json({**header, **mod.run(setting, ctx)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    mod.plot(result, out / f"{name}.png")
    return result
