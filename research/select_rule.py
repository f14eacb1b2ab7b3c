"""Choose the rule to ship from a run by the validation meta-objective at a longer horizon, never
by test numbers.

Continuous evaluation scores theta after 200 inner steps; a rule is used for 500 and more, and a
theta that is best at 200 steps need not be best at 500 (docs/meta_training.md measures it). So
each candidate -- the run's snapshots every `--every` steps from `--since` on, its
theta_best.npz, its last theta.npz, and the incumbent shipped rule -- trains fresh 4x128 base
models for `--steps` inner steps on the unlabeled training split of each held-out dataset (less
its validation rows, `data.validation_split`), and is scored by the meta-objective (Eq. 2,
10-way 10-shot ridge) on labeled validation rows. The test split, on which `metarule eval`
reports accuracy, is not read.

    python research/select_rule.py runs/cpu-oja --since 1600 --every 400 --incumbent cpu-oja-v0

Scores are cached in RUN/selection.json (so the script can be rerun as a run goes on). The
candidate with the lowest mean objective is chosen only if it beats the incumbent by more than
two standard errors of the difference; otherwise the incumbent stays ("chosen" in the file).
Every rule sees the same seeds (base-model initialisation, data order, labeled examples), so
the difference is taken seed by seed.

The best of many candidates is favoured by its own noise; to confirm it, score it alone
against the incumbent on fresh seeds (cached in RUN/confirm.json):

    python research/select_rule.py runs/cpu-oja --incumbent cpu-oja-v0 --only-extra \
        --extra runs/cpu-oja/snapshots/theta_002000.npz --first-seed 100 --seeds 20
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np

from metarule import catalog, data, outer
from metarule.train import TrainError, train_base_model


def objective(rule: catalog.Rule, datasets: dict, steps: int, seeds: range, widths, shots: int
              ) -> dict:
    """{dataset: (mean, stderr, per-seed values)} of the validation meta-objective; `datasets`
    are data.ValidationSplit."""
    out = {}
    for name, ds in datasets.items():
        values = []
        for seed in seeds:
            try:
                params = train_base_model(rule, ds.x_train, steps, widths, seed=seed,
                                          progress=False)
            except TrainError:  # diverged: the worst possible score
                values = [math.nan]
                break
            values.append(outer.few_shot_objective(params, ds.x_val, ds.y_val,
                                                   ds.num_classes, shots, seed))
        out[name] = {"mean": float(np.mean(values)), "values": [float(v) for v in values],
                     "stderr": float(np.std(values, ddof=1) / math.sqrt(len(values)))
                     if len(values) > 1 else math.nan}
    return out


def mean_stderr(score: dict) -> float:
    """Standard error of the mean over datasets of per-dataset means."""
    per = [v["stderr"] ** 2 for v in score["per_dataset"].values()]
    return math.sqrt(sum(per)) / len(per)


def difference(a: dict, b: dict) -> tuple[float, float]:
    """Mean and standard error of a's objective minus b's: seed by seed where both have every
    seed, else from the two standard errors."""
    per_seed = [np.subtract(a["per_dataset"][d]["values"], b["per_dataset"][d]["values"])
                for d in a["per_dataset"]]
    if all(len(p) > 1 for p in per_seed) and np.isfinite(per_seed).all():
        paired = np.mean(per_seed, axis=0)  # over datasets, per seed
        return float(paired.mean()), float(np.std(paired, ddof=1) / math.sqrt(len(paired)))
    return a["mean"] - b["mean"], math.hypot(mean_stderr(a), mean_stderr(b))


def choose(ranked: list[dict], incumbent: str | None) -> str:
    """The best candidate's path, unless it fails to beat the incumbent by 2 standard errors."""
    best = ranked[0]
    held = [c for c in ranked if c["path"] == incumbent]
    if not held or best is held[0]:
        return best["path"]
    diff, stderr = difference(best, held[0])
    return best["path"] if diff < -2 * stderr else incumbent


def candidates(run_dir: Path, since: int, every: int, incumbent: str | None,
               extra: list[str], only_extra: bool = False) -> dict[str, str]:
    """{label: rule path or shipped name}."""
    found = {f"{Path(path).name} (step {catalog.read_rule_file(Path(path)).card.get('outer_steps')})":
             path for path in extra}
    if only_extra:
        return found | ({f"shipped {incumbent}": incumbent} if incumbent else {})
    for path in sorted((run_dir / "snapshots").glob("theta_*.npz")):
        step = int(path.stem.split("_")[1])
        if step >= since and step % every == 0:
            found[f"step {step}"] = str(path)
    for name in ("theta_best.npz", "theta.npz"):
        if (run_dir / name).exists():
            step = catalog.read_rule_file(run_dir / name).card.get("outer_steps")
            found[f"{name} (step {step})"] = str(run_dir / name)
    if incumbent:
        found[f"shipped {incumbent}"] = incumbent
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--since", type=int, default=0, help="first snapshot step considered")
    parser.add_argument("--every", type=int, default=400, help="snapshot spacing considered")
    parser.add_argument("--incumbent", default=None, help="shipped rule to compare against")
    parser.add_argument("--extra", nargs="*", default=[], help="more rule files to consider")
    parser.add_argument("--datasets", default="mnist14,fashion_mnist14")
    parser.add_argument("--steps", type=int, default=500, help="inner steps per base model")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--only-extra", action="store_true",
                        help="score only the --extra rules and the incumbent (a confirmation)")
    args = parser.parse_args()
    cfg = outer.default_config("cpu")
    cache_path = args.run_dir / ("confirm.json" if args.only_extra else "selection.json")
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    protocol = {"steps": args.steps, "seeds": [seeds.start, seeds.stop],
                "widths": list(cfg.eval_widths),
                "shots": cfg.shots, "datasets": args.datasets.split(","),
                "split": "training split less validation rows (unlabeled, for the rule); "
                         "validation rows (labeled, for the objective)"}
    if cache.get("protocol") != protocol:
        cache = {"protocol": protocol, "scores": {}}
    datasets = {name: data.validation_split(data.load(name)) for name in protocol["datasets"]}
    current = {f"{label} | {where}": (label, where) for label, where in candidates(
        args.run_dir, args.since, args.every, args.incumbent, args.extra,
        args.only_extra).items()}
    # theta.npz and theta_best.npz change as the run goes on: drop scores of replaced files.
    cache["scores"] = {k: v for k, v in cache["scores"].items() if k in current}
    for key, (label, where) in current.items():
        if key not in cache["scores"]:  # a rule is loaded only to be scored
            rule = catalog.load_rule(where)
            print(f"scoring {label} ...", flush=True)
            per = objective(rule, datasets, args.steps, seeds, cfg.eval_widths, cfg.shots)
            cache["scores"][key] = {"label": label, "path": where,
                                    "steps": rule.card.get("outer_steps"), "per_dataset": per,
                                    "mean": float(np.mean([v["mean"] for v in per.values()]))}
            cache_path.write_text(json.dumps(cache, indent=1))
    ranked = sorted(cache["scores"].values(),
                    key=lambda c: math.inf if math.isnan(c["mean"]) else c["mean"])
    cache["chosen"] = choose(ranked, args.incumbent)
    cache_path.write_text(json.dumps(cache, indent=1))
    held = [c for c in ranked if c["path"] == args.incumbent]
    print("| candidate | " + " | ".join(protocol["datasets"]) + " | mean | minus incumbent |")
    print("|---|" + "---|" * (len(protocol["datasets"]) + 2))
    for c in ranked:
        cells = [f"{c['per_dataset'][d]['mean']:.3f} ± {c['per_dataset'][d]['stderr']:.3f}"
                 for d in protocol["datasets"]]
        versus = "{:+.3f} ± {:.3f}".format(*difference(c, held[0])) if held else "—"
        print(f"| {c['label']} | " + " | ".join(cells) + f" | {c['mean']:.3f} | {versus} |")
    print(f"chosen: {cache['chosen']}")


if __name__ == "__main__":
    main()
