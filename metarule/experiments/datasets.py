"""Fig. 4: the rule against classic rules, the untrained rule and the baselines, per dataset."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from metarule import baselines, catalog, evaluate, train
from metarule.experiments import common

FIGURE = "Fig. 4"
TITLE = "Generalisation over datasets and domains"
CLAIM = ("On held-out datasets (MNIST, Fashion-MNIST at 14×14 and 28×28) the learned rule gives "
         "better 10-shot features than random init, a VAE and supervised learning on the same "
         "100 labels; on text (IMDB) an early rule beats random init, a late one over-fits to "
         "images.")
PAPER = ("learned rule after 3000 inner steps, VAE after 100k steps, supervised 10k steps, "
         "10 seeds, full test splits")
USES_RULE = True
CLASSIC = ("init:oja", "init:sanger", "init:hebbian-decorrelation")
ALL = ("mnist14", "mnist", "fashion_mnist14", "fashion_mnist", "polarity", "stamps16_heldout")


@dataclass(frozen=True)
class Size:
    datasets: tuple[str, ...]
    eval_steps: tuple[int, ...]      # inner steps at which each rule is scored
    seeds: int
    n_train: int | None              # None: the whole train split
    n_test: int | None               # None: the whole test split
    vae_steps: int
    supervised_steps: int
    widths: tuple[int, ...] = (128, 128, 128, 128)


SIZES = {
    "tiny": Size(("mnist14",), (2, 4), 2, 500, 200, 4, 4, (16, 16)),
    "default": Size(ALL, (50, 200), 3, None, 2000, 2000, 500),
    "full": Size(ALL, (300, 1000, 3000), 10, None, None, 100_000, 10_000),
}


def rule_specs(main: str) -> list[str]:
    """The rule under test first, then the untrained rule and the classic rules, no repeats."""
    return list(dict.fromkeys([main, "untrained", *CLASSIC]))


def baseline_rows(ds, size: Size) -> list[dict]:
    """Random init (= step 0 of every rule), PCA, VAE and supervised, scored alike."""
    d, seeds = ds.input_dim, size.seeds
    rows = [{"method": "random init", "steps": 0,
             **common.score(baselines.random_init(d, 0, size.widths).embed_fn, ds, seeds)},
            {"method": "PCA", "steps": 0, **common.score(baselines.pca(ds.x_train).embed_fn,
                                                        ds, seeds)},
            {"method": "VAE", "steps": size.vae_steps, **common.score(
                baselines.vae(ds.x_train, size.vae_steps, seed=0).embed_fn, ds, seeds)}]
    sup = evaluate.fitted_few_shot_accuracy(
        lambda x, y, s: baselines.supervised(x, y, size.supervised_steps, seed=s,
                                             widths=size.widths).embed_fn,
        ds.x_train, ds.y_train, ds.x_test, ds.y_test, common.SHOTS, seeds)
    rows.append({"method": "supervised", "steps": size.supervised_steps, "mean": sup.mean,
                 "stderr": common.jsonable_stderr(sup.stderr), "accuracies": sup.accuracies})
    return rows


def run(size: Size, ctx: common.Context) -> dict:
    specs = rule_specs(ctx.rule_spec)
    table = {}
    jobs = tqdm(total=len(size.datasets) * (len(specs) + 1), desc="datasets",
                disable=not ctx.progress)
    for name in size.datasets:
        ds = common.load(name, size.n_train, size.n_test)
        rows = []
        for spec in specs:
            rule = ctx.rule if spec == ctx.rule_spec else catalog.load_rule(spec)
            curve = common.rule_curve(rule, ds, size.eval_steps, size.seeds, size.widths,
                                      progress=ctx.progress)
            rows.append({"method": spec, "sha256": train.theta_digest(rule.theta),
                         "steps": curve[-1]["step"], **{k: curve[-1][k] for k in (
                             "mean", "stderr", "accuracies")}, "curve": curve})
            jobs.update()
        rows += baseline_rows(ds, size)
        jobs.update()
        table[name] = rows
    jobs.close()
    return {"rule_specs": specs, "datasets": table}


def plot(result: dict, path) -> None:
    table = result["datasets"]
    names = list(table)
    methods = [r["method"] for r in table[names[0]]]
    fig, ax = common.figure(figsize=(max(6, 1.6 * len(names) + 3), 4))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        rows = [next(r for r in table[n] if r["method"] == method) for n in names]
        ax.bar(np.arange(len(names)) + (j - (len(methods) - 1) / 2) * width,
               [100 * r["mean"] for r in rows], width,
               yerr=[100 * (r["stderr"] or 0) for r in rows], capsize=2, label=method)
    ax.set_xticks(np.arange(len(names)), names, rotation=15)
    ax.set_ylabel("10-shot test accuracy (%)")
    ax.set_title(f"Rules after {result['setting']['eval_steps'][-1]} inner steps vs baselines")
    ax.legend(fontsize=7, ncol=2)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    table = result["datasets"]
    names = list(table)
    lines = ["| method | steps | " + " | ".join(names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for i, row in enumerate(table[names[0]]):
        cells = [common.pct(table[n][i]["mean"], table[n][i]["stderr"]) for n in names]
        lines.append(f"| {row['method']} | {row['steps']} | " + " | ".join(cells) + " |")
    steps = result["setting"]["eval_steps"]
    if len(steps) > 1:
        lines += ["", "Rules along inner training (first dataset, "
                  f"{names[0]}): " + "; ".join(
                      f"{r['method']}: " + ", ".join(
                          f"{p['step']}→{common.pct(p['mean'])}" for p in r["curve"])
                      for r in table[names[0]] if "curve" in r)]
    return lines


def reading(result: dict) -> str:
    table = result["datasets"]

    def row(rows, method):
        return next(r for r in rows if r["method"] == method)

    def wins(spec):  # datasets on which `spec` is clearly above each baseline
        return {b: [n for n, rows in table.items() if common.clearly_above(row(rows, spec),
                                                                          row(rows, b))]
                for b in ("random init", "VAE", "supervised", "PCA")}

    def said(w):
        return (f"clearly above random init on {len(w['random init'])} of {len(table)} datasets, "
                f"the VAE on {len(w['VAE'])}, supervised learning on {len(w['supervised'])} and "
                f"PCA on {len(w['PCA'])}")

    main = result["rule_specs"][0]
    w = wins(main)
    claim = set(w["random init"]) & set(w["VAE"]) & set(w["supervised"]) - {"polarity"}
    text = (f"After {result['setting']['eval_steps'][-1]} inner steps `{main}` is {said(w)}. "
            f"The paper's claim (above random init, the VAE and supervised learning on the image "
            f"datasets) holds on {', '.join(sorted(claim)) or 'none of them'} here")
    if "polarity" in table:
        rows = table["polarity"]
        text += (f"; on text (polarity) the rule is "
                 f"{common.relation(row(rows, main), row(rows, 'random init'))} random init")
    if "untrained" in result["rule_specs"][1:]:
        text += f". The untrained rule is {said(wins('untrained'))}"
    return text + "."
