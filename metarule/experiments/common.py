"""What the experiments share: dataset subsets, few-shot scores, accuracy along inner training,
and figure helpers."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarule import data, evaluate, train
from metarule.catalog import Rule

SHOTS = 10  # labeled examples per class, as in the paper


class ExperimentError(ValueError):
    """An experiment that cannot run as asked (unknown name, missing run folder, ...)."""


@dataclass(frozen=True)
class Context:
    """What an experiment runs with besides its size."""
    rule: Rule | None
    rule_spec: str
    run_dir: Path | None = None
    progress: bool = True


def subset(ds: data.Dataset, n_train: int | None, n_test: int | None,
           seed: int = 0) -> data.Dataset:
    """A seeded random subset of each split (None keeps a split whole), loaded into memory."""
    rng = np.random.default_rng(seed)

    def pick(x, y, n):
        idx = np.arange(len(y)) if n is None or n >= len(y) else \
            np.sort(rng.choice(len(y), n, replace=False))
        return np.asarray(x[idx]), np.asarray(y[idx])

    x_train, y_train = pick(ds.x_train, ds.y_train, n_train)
    x_test, y_test = pick(ds.x_test, ds.y_test, n_test)
    return dataclasses.replace(ds, x_train=x_train, y_train=y_train, x_test=x_test,
                               y_test=y_test)


def load(name: str, n_train: int | None = None, n_test: int | None = None) -> data.Dataset:
    return subset(data.load(name), n_train, n_test)


def jsonable_stderr(value: float) -> float | None:
    return None if math.isnan(value) else value


def score(embed_fn, ds: data.Dataset, seeds: int, shots: int = SHOTS) -> dict:
    """10-shot logistic-regression accuracy of `embed_fn` on ds: mean, stderr, per seed."""
    r = evaluate.few_shot_accuracy(embed_fn, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                                   shots, seeds)
    return {"mean": r.mean, "stderr": jsonable_stderr(r.stderr), "accuracies": r.accuracies}


def eval_chunk(eval_steps: tuple[int, ...], cap: int = 50) -> int:
    """A jit chunk that divides every evaluation step, so training pauses exactly there."""
    g = math.gcd(*(s for s in eval_steps if s > 0)) or 1
    return train.chunk_size(g, cap)


def rule_curve(rule: Rule, ds: data.Dataset, eval_steps: tuple[int, ...], seeds: int,
               widths: tuple[int, ...], activation: str = "relu", permute: bool = False,
               seed: int = 0, progress: bool = True, keep=None) -> list[dict]:
    """Few-shot accuracy of one base model at several points of inner training with `rule`.

    Args:
      eval_steps: inner steps to score at (0 = the untrained model).
      keep: optional `keep(step, params)` called at every evaluation step, e.g. to keep filters.
    Returns:
      [{"step", "mean", "stderr", "accuracies"}] in step order.
    """
    eval_steps = tuple(sorted(set(eval_steps)))
    points = []

    def callback(step, params):
        if step in eval_steps:
            points.append({"step": step, **score(
                evaluate.model_embed_fn(params, activation), ds, seeds)})
            if keep is not None:
                keep(step, params)

    train.train_base_model(rule, ds.x_train, max(eval_steps), widths=widths,
                           activation=activation, permute=permute, seed=seed,
                           chunk=eval_chunk(eval_steps), progress=progress, callback=callback)
    return points


def pct(mean: float, stderr: float | None = None) -> str:
    """'72.3 ± 0.5' (percent); the ± part only when the spread is known."""
    return f"{100 * mean:.1f}" + (f" ± {100 * stderr:.1f}" if stderr is not None else "")


def clearly_above(a: dict, b: dict) -> bool:
    """a's mean beats b's by more than two standard errors of the difference (unknown: 0)."""
    return a["mean"] - b["mean"] > 2 * math.hypot(a["stderr"] or 0.0, b["stderr"] or 0.0)


def relation(a: dict, b: dict) -> str:
    """How a's score stands to b's, in the words of the report's readings."""
    return ("clearly above" if clearly_above(a, b) else "clearly below" if clearly_above(b, a)
            else "level with")


def figure(*args, **kwargs):
    """A matplotlib figure on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_plot(ax, points: list[dict], label: str, **style) -> None:
    """Accuracy (%) against inner steps with standard-error bars."""
    steps = [p["step"] for p in points]
    means = [100 * p["mean"] for p in points]
    errs = [100 * (p["stderr"] or 0.0) for p in points]
    ax.errorbar(steps, means, yerr=errs, label=label, capsize=3, marker="o", ms=3, **style)
