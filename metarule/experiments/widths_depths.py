"""Fig. 5 left: the rule trains base models wider and deeper than any seen in meta-training."""
from __future__ import annotations

from dataclasses import dataclass

from metarule.experiments import common

FIGURE = "Fig. 5 left"
TITLE = "Generalisation over network widths and depths"
CLAIM = ("Meta-trained on 2–5 layers of 64–512 units, the rule still trains base models of up "
         "to 11 layers and 10,000 units per layer, and uses the extra width.")
PAPER = ("widths up to 10,000 units, depths 2–11, MNIST 14×14, accuracy at several points of "
         "inner training, 10 seeds")
USES_RULE = True


@dataclass(frozen=True)
class Size:
    widths: tuple[int, ...]          # swept at depth `depth`
    depths: tuple[int, ...]          # hidden layers, swept at width `width`
    eval_steps: tuple[int, ...]
    seeds: int
    width: int = 128
    depth: int = 4
    dataset: str = "mnist14"
    n_train: int | None = None
    n_test: int | None = None


SIZES = {
    "tiny": Size((16,), (2,), (0, 2, 4), 2, width=16, depth=2, n_train=500, n_test=200),
    "default": Size((32, 128, 512), (2, 4, 8), (0, 50, 200), 3, n_test=2000),
    "full": Size((32, 64, 128, 256, 512, 1024, 2048, 4096, 10_000), tuple(range(2, 12)),
                 (0, 300, 1000, 3000), 10),
}


def run(size: Size, ctx: common.Context) -> dict:
    ds = common.load(size.dataset, size.n_train, size.n_test)

    def curve(width, depth):
        return common.rule_curve(ctx.rule, ds, size.eval_steps, size.seeds, (width,) * depth,
                                 progress=ctx.progress)

    by_width = {str(w): curve(w, size.depth) for w in size.widths}
    by_depth = {str(d): by_width[str(size.width)] if d == size.depth and str(size.width)
                in by_width else curve(size.width, d) for d in size.depths}
    return {"dataset": size.dataset, "by_width": by_width, "by_depth": by_depth}


def plot(result: dict, path) -> None:
    fig, axes = common.figure(1, 2, figsize=(10, 4), sharey=True)
    setting = result["setting"]
    for ax, key, label in ((axes[0], "by_width", "units per layer"),
                           (axes[1], "by_depth", "hidden layers")):
        sweep = result[key]
        xs = [int(k) for k in sweep]
        for i, step in enumerate(setting["eval_steps"]):
            ax.errorbar(xs, [100 * v[i]["mean"] for v in sweep.values()],
                        yerr=[100 * (v[i]["stderr"] or 0) for v in sweep.values()],
                        marker="o", ms=3, capsize=3, label=f"{step} inner steps")
        ax.set_xlabel(label)
        if key == "by_width":
            ax.set_xscale("log")
            ax.set_title(f"width sweep at depth {setting['depth']}")
        else:
            ax.set_title(f"depth sweep at width {setting['width']}")
    axes[0].set_ylabel("10-shot test accuracy (%)")
    axes[0].legend(fontsize=7)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    steps = result["setting"]["eval_steps"]
    lines = ["| sweep | value | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|---:|" + "---:|" * len(steps)]
    for key, label in (("by_width", "width"), ("by_depth", "depth")):
        for value, points in result[key].items():
            lines.append(f"| {label} | {value} | " + " | ".join(
                common.pct(p["mean"], p["stderr"]) for p in points) + " |")
    return lines


def reading(result: dict) -> str:
    s = result["setting"]
    # (width, depth) -> curve; the two sweeps share the setting where they cross
    curves = {(int(w), s["depth"]): c for w, c in result["by_width"].items()}
    curves |= {(s["width"], int(d)): c for d, c in result["by_depth"].items()}
    flat = [f"{w}×{d}" for (w, d), c in curves.items() if not common.clearly_above(c[-1], c[0])]
    widths = sorted(result["by_width"], key=int)
    narrow, wide = result["by_width"][widths[0]][-1], result["by_width"][widths[-1]][-1]
    ok = not flat and common.clearly_above(wide, narrow)
    exceptions = f" (not in {', '.join(flat)})" if 0 < len(flat) < len(curves) else ""
    verdict = "as the paper claims" if ok else "the paper's claim is not borne out"
    return (f"After {s['eval_steps'][-1]} inner steps the rule is clearly above its step-0 "
            f"accuracy in {len(curves) - len(flat)} of {len(curves)} width × depth settings"
            f"{exceptions}; at that step the widest model ({widths[-1]} units) is "
            f"{common.relation(wide, narrow)} the narrowest ({widths[0]}): {verdict}, for "
            f"widths up to {widths[-1]} and depths up to {max(d for _, d in curves)} (the "
            f"paper's: 10,000 and 11).")
