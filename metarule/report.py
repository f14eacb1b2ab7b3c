"""`metarule report`: results/README.md from the experiments' JSON results."""
from __future__ import annotations

import json
from pathlib import Path

from metarule import experiments

HEADER = """# Results

Written by `metarule report` from the `*.json` files in this folder; each section gives the
paper's claim, our measurement (10-shot accuracy in %, mean ± standard error over the seeds
listed), the command that produced it and its figure. Rerun an experiment with the command
shown, then `metarule report`.
"""


def describe_rule(rule: dict | None) -> str:
    if rule is None:
        return "no rule"
    kind = "meta-trained" if rule["meta_trained"] else "not meta-trained"
    return f"`{rule['spec']}` ({kind}, θ sha256 {rule['sha256']})"


def settings_line(result: dict) -> str:
    s = result["setting"]
    keys = ("eval_steps", "steps", "snapshots", "vae_steps", "proto_steps", "seeds", "episodes",
            "n_test", "widths")
    parts = [f"{k}={s[k]}" for k in keys if k in s]
    return ", ".join(parts)


def section(name: str, result: dict | None) -> list[str]:
    mod = experiments.module(name)
    lines = [f"## {mod.FIGURE}: {mod.TITLE} (`{name}`)", "", f"**Paper:** {mod.CLAIM}", ""]
    if result is None:
        cmd = f"metarule experiment {name}" + (" RUN_DIR" if name == "meta-curves" else "")
        return lines + [f"Not run yet: `{cmd}`.", ""]
    lines += ["**Ours:**", "", *mod.summary(result), "",
              f"Rule: {describe_rule(result['rule'])}. Settings ({result['size']}): "
              f"{settings_line(result)}. Command: `{result['command']}` ({result['date']})."]
    if result["size"] != "full":
        lines.append(f"Smaller than the paper ({mod.PAPER}); `--full` runs the paper's sizes.")
    else:
        lines.append(f"Paper's setting: {mod.PAPER}.")
    return lines + ["", f"![{name}]({name}.png)", ""]


def write_report(results: str | Path = "results") -> Path:
    """Write results/README.md covering every experiment, run or not; returns its path."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for name in experiments.EXPERIMENTS:
        path = results / f"{name}.json"
        lines += section(name, json.loads(path.read_text()) if path.is_file() else None)
    out = results / "README.md"
    out.write_text("\n".join(lines))
    return out
