"""Meta-training curves from each named start at equal compute.

Each start is meta-trained for the same number of outer steps on the same seeded task stream
(the data of outer step s depends only on (seed, s), so every start sees identical tasks and
unroll lengths), keeping theta every few hundred steps:

    for s in random oja sanger hebbian-decorrelation oja-learned; do
      metarule meta-train --preset cpu --init $s --steps 800 --eval-every-s 0 \\
          --snapshot-every 200 --out runs/starts/$s
    done

This script then scores every snapshot the way continuous evaluation does (outer.evaluate_theta:
fresh 4x128 base models trained `--eval-steps` inner steps on the unlabeled training split,
10-shot logistic readout on 2000 validation rows, held-out meta-objective), caching each score in
OUT/curves.json so that it can run while training goes on, and writes OUT/curves.png and
OUT/curves.md:

    python research/start_curves.py --runs runs/starts --out docs/starts
"""
import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from metarule import catalog, data, outer
from metarule.train import TrainError

STARTS = ("random", "oja", "oja-learned", "sanger", "hebbian-decorrelation")


def score(theta, cfg, held_out) -> dict:
    try:
        rows = outer.evaluate_theta(theta, cfg, held_out)
    except TrainError:  # the rule diverged on a held-out model: worst possible score
        return {name: {"accuracy": math.nan, "meta_objective": math.nan} for name in held_out}
    return {r["dataset"]: {k: r[k] for k in ("accuracy", "accuracy_stderr", "meta_objective",
                                             "meta_objective_stderr")} for r in rows}


def training_rows(run_dir: Path, last: int) -> list[dict]:
    """The training log up to outer step `last`: every start sees the same tasks at the same
    step, so its meta-objective compares the starts pairwise."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return sorted((r for r in rows if r.get("kind") == "train" and r["step"] < last),
                  key=lambda r: r["step"])


def plot(results: dict, datasets: list[str], path: Path, window: int = 25) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(datasets) + 1, figsize=(5.5 * (len(datasets) + 1), 7.5))
    for i, start in enumerate(s for s in STARTS if s in results["starts"]):
        losses = np.array(results["starts"][start]["training_losses"])
        if len(losses) >= window:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            axes[0, -1].plot(np.arange(window - 1, len(losses)), smooth, color=f"C{i}",
                             label=f"init:{start}")
        snaps = results["starts"][start]["snapshots"]
        steps = sorted(snaps, key=int)
        for j, name in enumerate(datasets):
            for row, key in enumerate(("meta_objective", "accuracy")):
                scale = 100 if key == "accuracy" else 1
                y = [scale * snaps[s][name][key] for s in steps]
                err = [scale * snaps[s][name].get(key + "_stderr", 0.0) for s in steps]
                axes[row, j].errorbar([int(s) for s in steps], y, err, marker="o",
                                      color=f"C{i}", label=f"init:{start}", capsize=2)
    for j, name in enumerate(datasets):
        base = results["random_init"][name]
        axes[0, j].axhline(base["meta_objective"], color="gray", ls="--",
                           label="random init, no rule")
        axes[1, j].axhline(100 * base["accuracy"], color="gray", ls="--", label="random init, no rule")
        axes[0, j].set(title=f"{name} (held out)", ylabel="meta-objective (lower is better)")
        axes[1, j].set(xlabel="outer step", ylabel="10-shot accuracy (%)")
    axes[0, -1].set(title=f"training tasks (same tasks for every start; mean of {window})",
                    xlabel="outer step", ylabel="meta-objective")
    axes[0, -1].legend(fontsize=8)
    axes[1, -1].axis("off")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict, datasets: list[str]) -> str:
    steps = sorted({s for r in results["starts"].values() for s in r["snapshots"]}, key=int)
    n = max(len(r["training_losses"]) for r in results["starts"].values())
    bins = [(a, min(a + 50, n)) for a in range(0, n, 50)]
    lines = ["**training tasks, mean meta-objective over outer steps** (identical tasks for every "
             "start)", "", "| start | " + " | ".join(f"steps {a}–{b - 1}" for a, b in bins)
             + " | wall time (shared machine) |", "|---|" + "---|" * (len(bins) + 1)]
    for start in (s for s in STARTS if s in results["starts"]):
        entry = results["starts"][start]
        losses, wall = entry["training_losses"], entry.get("wall_s")
        lines.append(f"| init:{start} | " + " | ".join(
            f"{np.mean(losses[a:b]):.3f}" if len(losses) >= b else "" for a, b in bins)
            + (f" | {wall / 60:.0f} min |" if wall else " | |"))
    lines.append("")
    for key, label, fmt in (("meta_objective", "held-out meta-objective", "{:.3f}"),
                            ("accuracy", "10-shot accuracy (%)", "{:.1f}")):
        scale = 100 if key == "accuracy" else 1
        for name in datasets:
            lines += [f"**{name}, {label}** (random init, no rule: "
                      + fmt.format(scale * results["random_init"][name][key]) + ")", "",
                      "| start | " + " | ".join(f"step {s}" for s in steps) + " |",
                      "|---|" + "---|" * len(steps)]
            for start in (s for s in STARTS if s in results["starts"]):
                snaps = results["starts"][start]["snapshots"]
                cells = []
                for s in steps:
                    if s not in snaps:
                        cells.append("")
                        continue
                    v = snaps[s][name][key]
                    se = snaps[s][name].get(key + "_stderr")
                    cells.append("diverged" if math.isnan(v) else fmt.format(scale * v)
                                 + (f" ± {fmt.format(scale * se)}" if se is not None else ""))
                lines.append(f"| init:{start} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/starts")
    parser.add_argument("--out", default="docs/starts")
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--eval-steps", type=int, default=200)
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "curves.json"
    results = json.loads(cache.read_text()) if cache.exists() else {"starts": {}}
    cfg = dataclasses.replace(outer.default_config("cpu"), eval_datasets=tuple(datasets),
                              eval_seeds=args.seeds, eval_steps=args.eval_steps)
    results["protocol"] = {"eval_steps": cfg.eval_steps, "eval_seeds": cfg.eval_seeds,
                           "eval_widths": list(cfg.eval_widths), "shots": cfg.shots,
                           "readout": "logistic", "n_validation": 2000}
    held_out = {name: data.validation_split(data.load(name)) for name in datasets}

    def save():
        cache.write_text(json.dumps(results, indent=1))

    if "random_init" not in results:
        no_rule = dataclasses.replace(cfg, eval_steps=0)
        theta = catalog.init_rule("random", cfg.rule_cfg, __import__("jax").random.PRNGKey(0))
        results["random_init"] = score(theta, no_rule, held_out)
        save()
    for start in STARTS:
        run_dir = Path(args.runs) / start
        if not (run_dir / "snapshots").exists():
            continue
        entry = results["starts"].setdefault(start, {"snapshots": {}})
        last = max(int(p.stem.split("_")[1]) for p in (run_dir / "snapshots").glob("*.npz"))
        rows = training_rows(run_dir, last)
        entry["training_losses"] = [r["meta_loss"] for r in rows]
        entry["wall_s"] = rows[-1]["time_s"] if rows else None
        for path in sorted((run_dir / "snapshots").glob("theta_*.npz")):
            step = str(int(path.stem.split("_")[1]))
            if step in entry["snapshots"]:
                continue
            print(f"{start} step {step}", flush=True)
            entry["snapshots"][step] = score(catalog.load_rule(str(path)).theta, cfg, held_out)
            save()
    plot(results, datasets, out / "curves.png")
    (out / "curves.md").write_text(table(results, datasets))
    print(table(results, datasets))


if __name__ == "__main__":
    main()
