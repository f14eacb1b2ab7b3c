"""The rule on intact and on pixel-permuted inputs (Sec. 4.2, 5.1): it cannot exploit pixel
layout, so the two should score alike."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarule.experiments import common

FIGURE = "Sec. 4.2 / Fig. 2 right"
TITLE = "Invariance to a pixel permutation"
CLAIM = ("The learned rule's performance is invariant to permuting the input pixels, since it "
         "learns an algorithm rather than features tied to pixel positions.")
PAPER = "(no figure of its own) 3000 inner steps, 10 seeds"
USES_RULE = True


@dataclass(frozen=True)
class Size:
    datasets: tuple[str, ...]
    eval_steps: tuple[int, ...]
    seeds: int
    n_train: int | None = None
    n_test: int | None = None
    widths: tuple[int, ...] = (128, 128, 128, 128)


SIZES = {
    "tiny": Size(("mnist14",), (0, 2, 4), 2, 500, 200, (16, 16)),
    "default": Size(("mnist14", "fashion_mnist14"), (0, 50, 200), 3, n_test=2000),
    "full": Size(("mnist14", "mnist", "fashion_mnist14", "fashion_mnist", "stamps16_heldout"),
                 (0, 300, 1000, 3000), 10),
}


def run(size: Size, ctx: common.Context) -> dict:
    out = {}
    for name in size.datasets:
        ds = common.load(name, size.n_train, size.n_test)
        out[name] = {key: common.rule_curve(ctx.rule, ds, size.eval_steps, size.seeds,
                                            size.widths, permute=permute, progress=ctx.progress)
                     for key, permute in (("intact", False), ("permuted", True))}
    return {"datasets": out}


def plot(result: dict, path) -> None:
    fig, ax = common.figure(figsize=(6, 4))
    colors = iter(["C0", "C1", "C2", "C3", "C4", "C5"])
    for name, curves in result["datasets"].items():
        c = next(colors)
        common.curve_plot(ax, curves["intact"], f"{name} intact", color=c)
        common.curve_plot(ax, curves["permuted"], f"{name} permuted", color=c, ls="--")
    ax.set_xlabel("inner steps")
    ax.set_ylabel("10-shot test accuracy (%)")
    ax.legend(fontsize=7)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    lines = ["| dataset | step | intact | permuted | difference |", "|---|---:|---:|---:|---:|"]
    for name, curves in result["datasets"].items():
        for a, b in zip(curves["intact"], curves["permuted"]):
            diff = np.mean(np.subtract(b["accuracies"], a["accuracies"]))
            lines.append(f"| {name} | {a['step']} | {common.pct(a['mean'], a['stderr'])} | "
                         f"{common.pct(b['mean'], b['stderr'])} | {100 * diff:+.1f} |")
    return lines


def reading(result: dict) -> str:
    diffs, apart = [], []
    step = next(iter(result["datasets"].values()))["intact"][-1]["step"]
    for name, curves in result["datasets"].items():
        a, b = curves["intact"][-1], curves["permuted"][-1]
        diffs.append(f"{100 * (b['mean'] - a['mean']):+.1f} ({name})")
        if common.relation(b, a) != "level with":
            apart.append(name)
    return (f"At step {step} permuted minus intact is {', '.join(diffs)} points: "
            + ("within two standard errors on every dataset, as the paper claims."
               if not apart else f"clearly apart on {', '.join(apart)}, unlike the paper."))
