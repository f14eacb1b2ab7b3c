"""Fig. 3: meta-training curves read from a run's metrics.jsonl.

Each line is a JSON object with at least `step`, `time_s` and `meta_loss`; evaluation lines add
`"kind": "eval"`, `dataset`, `meta_objective` and `accuracy`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from metarule.experiments import common

FIGURE = "Fig. 3"
TITLE = "Meta-training curves"
CLAIM = ("The meta-training loss keeps falling through 200 hours; held-out image datasets keep "
         "improving while the out-of-domain text task starts to over-fit.")
PAPER = "~200 hours on 512 workers, rolling averages"
USES_RULE = False
MAX_POINTS = 2000  # the training series is averaged into at most this many bins
# Per evaluation; the standard errors are optional (None when a run does not log them).
EVAL_KEYS = ("step", "time_s", "meta_objective", "meta_objective_stderr", "accuracy",
             "accuracy_stderr")


@dataclass(frozen=True)
class Size:
    window: int  # rolling-average window of the plotted meta-loss, in logged steps


SIZES = {"tiny": Size(5), "default": Size(50), "full": Size(200)}


def read_metrics(path) -> list[dict]:
    """The JSON lines of metrics.jsonl; a one-line ExperimentError if it is missing or bad."""
    if not path.is_file():
        raise common.ExperimentError(f"no {path.name} in {path.parent}; pass the --out folder "
                                     f"of a `metarule meta-train` run")
    lines = []
    for i, text in enumerate(path.read_text().splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as e:
                raise common.ExperimentError(f"{path}:{i}: not JSON ({e.msg})") from None
    return lines


def binned(values: np.ndarray, bins: int) -> np.ndarray:
    """Means over `bins` consecutive groups (no-op when already short enough)."""
    if len(values) <= bins:
        return values
    return np.array([chunk.mean() for chunk in np.array_split(values, bins)])


def run(size: Size, ctx: common.Context) -> dict:
    lines = read_metrics(ctx.run_dir / "metrics.jsonl")
    steps = [x for x in lines if x.get("kind", "train") != "eval" and "meta_loss" in x]
    if not steps:
        raise common.ExperimentError(f"{ctx.run_dir}/metrics.jsonl has no lines with meta_loss")
    series = {k: binned(np.asarray([x[k] for x in steps], float), MAX_POINTS).tolist()
              for k in ("step", "time_s", "meta_loss")}
    evals = {}
    for x in lines:
        if x.get("kind") == "eval":
            e = evals.setdefault(x["dataset"], {k: [] for k in EVAL_KEYS})
            for k in e:
                e[k].append(x.get(k))
    config = ctx.run_dir / "config.json"  # names the starting rule, evaluated at step 0
    init = json.loads(config.read_text()).get("init") if config.is_file() else None
    return {"run_dir": str(ctx.run_dir), "init": init, "train": series, "eval": evals,
            "final": {"step": steps[-1]["step"], "hours": steps[-1]["time_s"] / 3600,
                      "meta_loss": float(np.mean([x["meta_loss"] for x in steps[-size.window:]]))}}


def rolling(values, window: int) -> np.ndarray:
    v = np.asarray(values, float)
    w = max(1, min(window, len(v)))
    return np.convolve(v, np.ones(w) / w, mode="valid")


def plot(result: dict, path) -> None:
    window = result["setting"]["window"]
    fig, axes = common.figure(1, 3, figsize=(13, 3.6))
    hours = np.asarray(result["train"]["time_s"]) / 3600
    loss = result["train"]["meta_loss"]
    axes[0].plot(hours, loss, color="C0", alpha=0.25)
    smooth = rolling(loss, window)
    axes[0].plot(hours[len(hours) - len(smooth):], smooth, color="C0")
    axes[0].set_title("training meta-loss")
    for name, e in result["eval"].items():
        h = np.asarray(e["time_s"], float) / 3600
        for ax, key, scale in ((axes[1], "meta_objective", 1), (axes[2], "accuracy", 100)):
            ax.errorbar(h, scale * np.asarray(e[key], float),
                        yerr=scale * np.nan_to_num(np.asarray(e[f"{key}_stderr"], float)),
                        marker="o", ms=3, capsize=2, label=name)
    axes[1].set_title("evaluation meta-objective")
    axes[2].set_title("evaluation 10-shot accuracy (%)")
    for ax in axes:
        ax.set_xlabel("hours of meta-training")
    if result["eval"]:
        axes[2].legend(fontsize=7)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    f = result["final"]
    lines = [f"Run {result['run_dir']}: {f['step']} outer steps in {f['hours']:.2f} h; "
             f"meta-loss {result['train']['meta_loss'][0]:.3f} at the start, "
             f"{f['meta_loss']:.3f} at the end (mean of the last lines).", ""]
    if result["eval"]:
        lines += ["| dataset | first meta-objective | last | first accuracy | last |",
                  "|---|---:|---:|---:|---:|"]
        for name, e in result["eval"].items():
            lines.append(f"| {name} | {e['meta_objective'][0]:.3f} | "
                         f"{e['meta_objective'][-1]:.3f} | {common.pct(e['accuracy'][0])} | "
                         f"{common.pct(e['accuracy'][-1])} |")
    return lines


def reading(result: dict) -> str:
    f = result["final"]
    text = (f"Over {f['hours']:.2f} h (the paper's: ~200 h) the training meta-loss goes "
            f"{result['train']['meta_loss'][0]:.3f} → {f['meta_loss']:.3f}")
    if result["eval"]:
        moves = []
        for name, e in result["eval"].items():
            first, last = ({"mean": e["accuracy"][i], "stderr": e["accuracy_stderr"][i]}
                           for i in (0, -1))
            moves.append(f"{name} {common.relation(last, first)} its start")
        init = f"`init:{result['init']}`, " if result.get("init") else ""
        text += (f"; held-out 10-shot accuracy at the last evaluation: {'; '.join(moves)}. The "
                 f"evaluation at step {next(iter(result['eval'].values()))['step'][0]} is "
                 f"{init}the θ the run started from, before any meta-training")
    if f["hours"] < 100:
        text += (". The run is too short to test the paper's claims about 200 hours (image "
                 "datasets still improving, text over-fitting)")
    return text + "."
