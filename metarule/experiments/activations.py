"""Fig. 5 right: the rule trains base models with activations it never saw in meta-training."""
from __future__ import annotations

from dataclasses import dataclass

from metarule.experiments import common

FIGURE = "Fig. 5 right"
TITLE = "Generalisation over activation functions"
CLAIM = ("Meta-trained on relu only, the rule still improves on random init for every activation "
         "tried (leaky relu and swish lose little; the step function doubles its random-init "
         "accuracy).")
PAPER = "MNIST 14×14, accuracy along 3000+ inner steps, 10 seeds"
USES_RULE = True
ALL = ("relu", "leaky_relu", "swish", "tanh", "sigmoid", "elu", "softplus", "step")


@dataclass(frozen=True)
class Size:
    activations: tuple[str, ...]
    eval_steps: tuple[int, ...]
    seeds: int
    dataset: str = "mnist14"
    n_train: int | None = None
    n_test: int | None = None
    widths: tuple[int, ...] = (128, 128, 128, 128)


SIZES = {
    "tiny": Size(("step",), (0, 2, 4), 2, n_train=500, n_test=200, widths=(16, 16)),
    "default": Size(ALL, (0, 50, 200), 3, n_test=2000),
    "full": Size(ALL, (0, 300, 1000, 3000), 10),
}


def run(size: Size, ctx: common.Context) -> dict:
    ds = common.load(size.dataset, size.n_train, size.n_test)
    curves = {act: common.rule_curve(ctx.rule, ds, size.eval_steps, size.seeds, size.widths,
                                     activation=act, progress=ctx.progress)
              for act in size.activations}
    return {"dataset": size.dataset, "curves": curves}


def plot(result: dict, path) -> None:
    fig, ax = common.figure(figsize=(6, 4))
    for act, points in result["curves"].items():
        common.curve_plot(ax, points, act)
    ax.set_xlabel("inner steps")
    ax.set_ylabel("10-shot test accuracy (%)")
    ax.set_title(f"{result['dataset']}: activations")
    ax.legend(fontsize=7, ncol=2)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    steps = [p["step"] for p in next(iter(result["curves"].values()))]
    lines = ["| activation | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for act, points in result["curves"].items():
        lines.append(f"| {act} | " + " | ".join(common.pct(p["mean"], p["stderr"])
                                                 for p in points) + " |")
    return lines


def reading(result: dict) -> str:
    curves = result["curves"]
    flat = [a for a, c in curves.items() if not common.clearly_above(c[-1], c[0])]
    exceptions = f" (not for {', '.join(flat)})" if 0 < len(flat) < len(curves) else ""
    text = (f"After {next(iter(curves.values()))[-1]['step']} inner steps the rule is clearly "
            f"above random init (step 0) for {len(curves) - len(flat)} of {len(curves)} "
            f"activations{exceptions}")
    if "step" in curves:
        first, last = curves["step"][0]["mean"], curves["step"][-1]["mean"]
        text += (f"; the step function goes {common.pct(first)} → {common.pct(last)} "
                 f"(×{last / first:.1f}; the paper's: ×2)")
    return text + (": as the paper claims." if not flat else
                   ": short of the paper's claim, which is every activation.")
