"""Copy a run's best rule (by held-out meta-objective) into the package, with its card.

    python scripts/ship_rule.py runs/cpu-oja cpu-oja-v0 --command "metarule meta-train ..."

With RUN/selection.json (research/select_rule.py) present, the rule it chose is shipped and its
scores go on the card; otherwise theta_best.npz (continuous evaluation's choice), else theta.npz.
A rule chosen otherwise (a snapshot scored by research/equal_compute.py) is shipped with
`--theta RUN/snapshots/theta_STEP.npz --selected-by "how it was chosen"`.
"""
import argparse
import json
from pathlib import Path

from metarule import catalog


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--command", required=True, help="the command that produced the run")
    parser.add_argument("--note", default="")
    parser.add_argument("--theta", type=Path, default=None, help="ship this rule file of the run")
    parser.add_argument("--selected-by", default=None, help="with --theta: how it was chosen")
    args = parser.parse_args()
    if (args.theta is None) != (args.selected_by is None):
        parser.error("--theta and --selected-by go together")
    best = args.run_dir / "theta_best.npz"
    selection_path = args.run_dir / "selection.json"
    selection = (json.loads(selection_path.read_text())
                 if selection_path.exists() and not args.theta else None)
    if args.theta:
        rule = catalog.read_rule_file(args.theta)
        selected_by = args.selected_by
    elif selection:
        rule = catalog.read_rule_file(Path(selection["chosen"]))
        selected_by = (f"lowest mean validation meta-objective (data.validation_split) of the "
                       f"held-out datasets after {selection['protocol']['steps']} inner steps "
                       f"among the candidates of research/select_rule.py (selection_scores)")
    elif best.exists():
        rule = catalog.read_rule_file(best)
        selected_by = rule.card["selected_by"]  # written by outer.keep_best
    else:
        rule = catalog.read_rule_file(args.run_dir / "theta.npz")
        selected_by = "the run's last checkpoint (no selection)"
    config = json.loads((args.run_dir / "config.json").read_text())
    config = config.get("meta", config)  # an ES/PES run nests the meta-training config
    rows = [json.loads(line) for line in open(args.run_dir / "metrics.jsonl")]
    evals = [r for r in rows if r.get("kind") == "eval"]
    chosen = rule.card["outer_steps"]
    held_out = {r["dataset"]: {"accuracy": r["accuracy"], "meta_objective": r["meta_objective"]}
                for r in evals if r["step"] == chosen} or "not evaluated at this step"
    start = {r["dataset"]: {"accuracy": r["accuracy"], "meta_objective": r["meta_objective"]}
             for r in evals if r["step"] == 0}
    card = {**rule.card, "name": args.name,
            "selected_by": selected_by,
            "training_data": config["datasets"], "eval_settings": {
                k: config[k] for k in ("eval_datasets", "eval_steps", "eval_seeds", "eval_widths")},
            "held_out": held_out, "held_out_at_start": start, "command": args.command,
            "note": args.note}
    if selection:
        card["selection_protocol"] = selection["protocol"]
        card["selection_scores"] = {c["label"]: round(c["mean"], 4)
                                    for c in selection["scores"].values()}
    out = Path(catalog.__file__).parent / "rules" / f"{args.name}.npz"
    catalog.save_rule(out, rule.theta, rule.cfg, card)
    out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped {out}")


if __name__ == "__main__":
    main()
