"""Meta-training estimators compared at equal compute: validation accuracy against CPU-hours.

Each run starts from the same rule with the same seed and keeps snapshots (`--snapshot-every`),
each stamped with the CPU seconds its run had used (compiles included). For every run this
script takes the last snapshot at or before each of `--points` equal fractions of
`--cpu-hours`, trains fresh 4x128 base models with it for `--steps` inner steps on the unlabeled
training split less its validation rows (`data.validation_split`), and scores 10-shot accuracy
(logistic readout) on the validation rows. Every rule sees the same seeds, so each point is
compared with the start seed by seed. The test split is not read.

    python research/equal_compute.py runs/compare/tbptt runs/compare/es runs/compare/pes \\
        --start cpu-oja-v0 --cpu-hours 0.75 --out results/equal_compute

Scores are cached in OUT.json (rerun as the runs go on); OUT.png is the figure.

`--at-steps 80,100` scores the snapshots of those outer steps instead (choosing among one run's
snapshots). The best of many points is favoured by its own noise; before a rule is shipped, confirm it
against the start on fresh seeds (OUT_confirm.json):

    python research/equal_compute.py --start cpu-oja-v0 --cpu-hours 0.6 \
        --confirm runs/compare/pes/snapshots/theta_000050.npz --first-seed 100 --seeds 12
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np

from metarule import catalog, data, evaluate
from metarule.train import TrainError, train_base_model

WIDTHS = (128, 128, 128, 128)


def accuracies(rule: catalog.Rule, ds: data.ValidationSplit, steps: int, seeds: int,
               shots: int = 10, first_seed: int = 0) -> list[float]:
    """10-shot validation accuracy per seed; NaN for every seed if a base model diverged."""
    def fit(x_lab, y_lab, seed):
        params = train_base_model(rule, ds.x_train, steps, WIDTHS, seed=seed, progress=False)
        return evaluate.model_embed_fn(params)
    try:
        res = evaluate.fitted_few_shot_accuracy(fit, ds.x_train, ds.y_train, ds.x_val,
                                                ds.y_val, shots=shots, seeds=seeds,
                                                first_seed=first_seed)
    except TrainError:
        return [math.nan] * seeds
    return res.accuracies


def snapshots(run_dir: Path) -> list[tuple[float, int, Path]]:
    """(CPU seconds, step, path) of a run's snapshots, in order."""
    out = []
    for path in sorted((run_dir / "snapshots").glob("theta_*.npz")):
        card = catalog.read_rule_file(path).card
        if "cpu_seconds" in card:
            out.append((float(card["cpu_seconds"]), int(card["outer_steps"]), path))
    return out


def at_points(snaps, cpu_hours: float, points: int) -> list[tuple[float, tuple]]:
    """For each grid point k/points * cpu_hours, the last snapshot at or before it."""
    chosen = []
    for k in range(1, points + 1):
        limit = k / points * cpu_hours * 3600
        before = [s for s in snaps if s[0] <= limit]
        if before and before[-1][0] > 0:
            chosen.append((k / points * cpu_hours, before[-1]))
    return chosen


def paired(values, base) -> tuple[float, float]:
    d = np.subtract(values, base)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = results["protocol"]["datasets"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2))
    for ax, name in zip(np.atleast_1d(axes), names):
        start = results["start"]["scores"][name]
        for i, (run, entry) in enumerate(results["runs"].items()):
            pts = sorted(entry["points"].values(), key=lambda p: p["cpu_hours"])
            x = [0.0] + [p["cpu_seconds"] / 3600 for p in pts]  # where the snapshot was kept
            y = [100 * np.mean(start)] + [100 * np.mean(p["scores"][name]) for p in pts]
            err = [0.0] + [100 * paired(p["scores"][name], start)[1] for p in pts]
            ax.errorbar(x, y, err, marker="o", capsize=2, color=f"C{i}", label=run)
        ax.axhline(100 * np.mean(start), color="gray", ls="--",
                   label=f"start ({results['start']['rule']})")
        ax.set(title=f"{name}: validation rows", xlabel="CPU-hours of meta-training",
               ylabel=f"10-shot accuracy (%), {results['protocol']['steps']} inner steps")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("error bars: standard error of the paired difference from the start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict) -> str:
    names = results["protocol"]["datasets"]
    start = results["start"]["scores"]
    lines = ["| run | CPU-hours used | step | " + " | ".join(f"{n} (minus start)" for n in names)
             + " |", "|---|---|---|" + "---|" * len(names),
             f"| start {results['start']['rule']} | 0 | 0 | " + " | ".join(
                 f"{100 * np.mean(start[n]):.1f}" for n in names) + " |"]
    for run, entry in results["runs"].items():
        for p in sorted(entry["points"].values(), key=lambda p: p["cpu_hours"]):
            cells = []
            for n in names:
                mean, se = paired(p["scores"][n], start[n])
                cells.append(f"{100 * np.mean(p['scores'][n]):.1f} ({100 * mean:+.1f} ± "
                             f"{100 * se:.1f})")
            lines.append(f"| {run} | {p['cpu_seconds'] / 3600:.2f} | {p['step']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def confirm(args) -> None:
    """The candidate against the start on fresh seeds, per dataset: paired difference."""
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    out = {"protocol": {"steps": args.steps, "seeds": [seeds.start, seeds.stop],
                        "widths": list(WIDTHS), "shots": 10, "readout": "logistic",
                        "split": "validation rows of the training split"},
           "start": args.start, "candidate": args.confirm, "scores": {}}
    for name in args.datasets.split(","):
        ds = data.validation_split(data.load(name))
        both = {label: accuracies(catalog.load_rule(spec), ds, args.steps, args.seeds,
                                  first_seed=args.first_seed)
                for label, spec in (("start", args.start), ("candidate", args.confirm))}
        mean, se = paired(both["candidate"], both["start"])
        out["scores"][name] = {**both, "difference": mean, "difference_stderr": se}
        print(f"{name}: start {100 * np.mean(both['start']):.1f}, candidate "
              f"{100 * np.mean(both['candidate']):.1f}, paired {100 * mean:+.1f} ± {100 * se:.1f}",
              flush=True)
    path = Path(f"{args.out}_confirm.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--start", default="cpu-oja-v0", help="the rule every run started from")
    parser.add_argument("--cpu-hours", type=float, required=True, help="the equal budget")
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    parser.add_argument("--out", type=Path, default=Path("results/equal_compute"))
    parser.add_argument("--confirm", default=None,
                        help="score this rule and the start alone on seeds from --first-seed")
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--at-steps", default=None,
                        help="score the snapshots of these outer steps, e.g. 80,100, instead of "
                             "the CPU-hour grid")
    args = parser.parse_args()
    if args.confirm:
        confirm(args)
        return
    protocol = {"steps": args.steps, "seeds": args.seeds, "widths": list(WIDTHS), "shots": 10,
                "readout": "logistic", "datasets": args.datasets.split(","),
                "cpu_hours": args.cpu_hours,
                "split": "validation rows of the training split (data.validation_split)"}
    cache = args.out.with_suffix(".json")
    results = json.loads(cache.read_text()) if cache.exists() else {}
    if results.get("protocol") != protocol or results.get("start", {}).get("rule") != args.start:
        results = {"protocol": protocol, "start": {"rule": args.start}, "runs": {}}
    splits = {n: data.validation_split(data.load(n)) for n in protocol["datasets"]}

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(results, indent=1))

    def score(rule) -> dict:
        return {n: accuracies(rule, ds, args.steps, args.seeds) for n, ds in splits.items()}

    if "scores" not in results["start"]:
        print(f"scoring the start {args.start} ...", flush=True)
        results["start"]["scores"] = score(catalog.load_rule(args.start))
        save()
    for run_dir in args.runs:
        config = json.loads((run_dir / "config.json").read_text())
        entry = results["runs"].setdefault(run_dir.name, {"config": config, "points": {}})
        snaps = snapshots(run_dir)
        if args.at_steps:
            steps = {int(step) for step in args.at_steps.split(",")}
            chosen = [(snap[0] / 3600, snap) for snap in snaps if snap[1] in steps]
        else:
            chosen = at_points(snaps, args.cpu_hours, args.points)
        for hours, (cpu_s, step, path) in chosen:
            key = f"{hours:.4f}"
            if entry["points"].get(key, {}).get("step") == step:
                continue
            print(f"scoring {run_dir.name} at {hours:.2f} CPU-hours (step {step}) ...",
                  flush=True)
            entry["points"][key] = {"cpu_hours": hours, "cpu_seconds": cpu_s, "step": step,
                                    "path": str(path),
                                    "scores": score(catalog.load_rule(str(path)))}
            save()
    plot(results, args.out.with_suffix(".png"))
    print(table(results))


if __name__ == "__main__":
    main()
