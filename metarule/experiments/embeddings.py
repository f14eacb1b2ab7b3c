"""Fig. 6 centre and right: the embedding before and after the rule trains the base model, and
how many principal components it spans."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from metarule import evaluate, train
from metarule.experiments import common

FIGURE = "Fig. 6 centre and right"
TITLE = "Embeddings before and after training"
CLAIM = ("Without labels the rule reshapes the data manifold to partly separate the classes, "
         "even on 2-d two moons; the two-moons embedding is much lower-dimensional than MNIST's.")
PAPER = "two moons and MNIST, 32-d embedding projected on the top 3 principal components"
USES_RULE = True


@dataclass(frozen=True)
class Size:
    datasets: tuple[str, ...]
    steps: int
    n_points: int                # test examples embedded and plotted
    seeds: int
    n_train: int | None = None
    widths: tuple[int, ...] = (128, 128, 128, 128)


SIZES = {
    "tiny": Size(("moons",), 2, 200, 2, 500, (16, 16)),
    "default": Size(("moons", "mnist14"), 300, 1000, 3),
    "full": Size(("moons", "mnist14"), 3000, 2000, 10),
}


def describe(params, ds) -> dict:
    """Explained variance and a 3-d PCA projection of the test examples' embedding."""
    u = evaluate.model_embed_fn(params)(ds.x_test)
    pca = PCA(n_components=min(u.shape)).fit(u)
    cum = np.cumsum(pca.explained_variance_ratio_)
    return {"cumulative_variance": np.round(cum, 4).tolist(),
            "components_90": int(np.searchsorted(cum, 0.9) + 1),
            "projection": np.round(pca.transform(u)[:, :3], 3).tolist()}


def run(size: Size, ctx: common.Context) -> dict:
    out = {}
    for name in size.datasets:
        ds = common.load(name, size.n_train, size.n_points)
        kept = {}
        train.train_base_model(ctx.rule, ds.x_train, size.steps, size.widths,
                               progress=ctx.progress,
                               callback=lambda step, p: kept.update(
                                   {step: p} if step in (0, size.steps) else {}))
        before, after = describe(kept[0], ds), describe(kept[size.steps], ds)
        acc = {k: common.score(evaluate.model_embed_fn(kept[s]), ds, size.seeds)
               for k, s in (("before", 0), ("after", size.steps))}
        out[name] = {"labels": ds.y_test.tolist(), "before": before, "after": after,
                     "accuracy": acc}
    return {"datasets": out}


def plot(result: dict, path) -> None:
    import matplotlib.pyplot as plt
    sets = result["datasets"]
    fig = plt.figure(figsize=(11, 3.4 * len(sets)))
    for r, (name, v) in enumerate(sets.items()):
        for c, key in enumerate(("before", "after")):
            ax = fig.add_subplot(len(sets), 3, 3 * r + c + 1, projection="3d")
            p = np.asarray(v[key]["projection"])
            p = np.pad(p, ((0, 0), (0, 3 - p.shape[1])))
            ax.scatter(*p.T, c=v["labels"], cmap="tab10", s=3)
            ax.set_title(f"{name}, {key} ({100 * v['accuracy'][key]['mean']:.0f}% 10-shot)",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_zticks([])
    ax = fig.add_subplot(1, 3, 3)
    for i, (name, v) in enumerate(sets.items()):
        for key, ls in (("before", ":"), ("after", "-")):
            cum = v[key]["cumulative_variance"]
            ax.plot(np.arange(1, len(cum) + 1), cum, ls=ls, color=f"C{3 - 3 * i}",
                    label=f"{name} {key}")
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.legend(fontsize=7)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    lines = ["| dataset | 10-shot before | 10-shot after | PCs for 90% var. before | after |",
             "|---|---:|---:|---:|---:|"]
    for name, v in result["datasets"].items():
        a = v["accuracy"]
        lines.append(f"| {name} | {common.pct(a['before']['mean'], a['before']['stderr'])} | "
                     f"{common.pct(a['after']['mean'], a['after']['stderr'])} | "
                     f"{v['before']['components_90']} | {v['after']['components_90']} |")
    return lines


def reading(result: dict) -> str:
    sets = result["datasets"]
    acc = {name: v["accuracy"] for name, v in sets.items()}
    flat = [n for n, a in acc.items() if not common.clearly_above(a["after"], a["before"])]
    exceptions = f" (not on {', '.join(flat)})" if 0 < len(flat) < len(acc) else ""
    text = (f"10-shot accuracy before → after {result['setting']['steps']} inner steps: "
            + "; ".join(f"{n} {common.pct(a['before']['mean'])} → "
                        f"{common.pct(a['after']['mean'])}" for n, a in acc.items())
            + f". The rule clearly improves it on {len(acc) - len(flat)} of {len(acc)} datasets"
            + (", as the paper claims" if not flat else f"{exceptions}, short of the paper's "
                                                         "claim"))
    if {"moons", "mnist14"} <= set(sets):
        moons, mnist = (sets[n]["after"]["components_90"] for n in ("moons", "mnist14"))
        text += (f". After training two moons needs {moons} principal components for 90% of the "
                 f"variance and MNIST {mnist}: "
                 + ("lower-dimensional, as the paper says" if moons < mnist else "not lower, "
                    "unlike the paper"))
    return text + "."
