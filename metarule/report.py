"""`metarule report`: results/README.md from the experiments' JSON results."""
from __future__ import annotations

import json
from pathlib import Path

from metarule import experiments

UNTRAINED = "untrained"  # results/untrained/NAME.json: the experiment run with the paper's θ init

HEADER = """# Results

Written by `metarule report` from the `*.json` files in this folder; each section gives the
paper's claim, our measurement (10-shot accuracy in %, mean ± standard error over the seeds
listed), a reading of it against the claim, the rule θ used, the command that produced it and
its figure. Rerun an experiment with the command shown, then `metarule report`.

The paper's θ had 200 hours of meta-training on 512 workers; ours far less (see each rule
line), and our default sizes are smaller than the paper's, so absolute numbers are lower. In a
reading, "clearly" means by more than two standard errors of the difference, a rough test with
the 3 seeds of the default size. Each experiment that applies a rule is also run with the
untrained rule (the paper's θ initialisation, in `untrained/`): a control that shows what
meta-training adds.
"""


def describe_rule(rule: dict | None) -> str:
    if rule is None:
        return "no rule"
    if not rule["meta_trained"]:
        return f"`{rule['spec']}` (not meta-trained, θ sha256 {rule['sha256']})"
    card = rule["card"]
    origin = (f" from `init:{card['init']}` for {card['outer_steps']} outer steps, "
              f"{card['seconds'] / 3600:.1f} h" if {"init", "outer_steps", "seconds"} <= set(card)
              else "")
    return f"`{rule['spec']}` (meta-trained{origin}; θ sha256 {rule['sha256']})"


def settings_line(result: dict) -> str:
    s = result["setting"]
    keys = ("eval_steps", "steps", "snapshots", "vae_steps", "proto_steps", "seeds", "episodes",
            "n_test", "widths", "window")
    parts = [f"{k}={'all' if s[k] is None else s[k]}" for k in keys if k in s]
    return ", ".join(parts)


def measurement(name: str, result: dict, folder: str = "") -> list[str]:
    """One result's summary, reading, rule, settings, command and figure (in `folder`)."""
    mod = experiments.module(name)
    # meta-curves follows the θ of a run rather than applying one, and its size is the run's
    rule = "the run's θ along meta-training" if name == "meta-curves" else \
        describe_rule(result["rule"])
    lines = [*mod.summary(result), "", f"**Reading:** {mod.reading(result)}", "",
             f"Rule: {rule}. Settings ({result['size']}): {settings_line(result)}. Command: "
             f"`{result['command']}` ({result['date']})."]
    if result["size"] == "full" or name == "meta-curves":
        lines.append(f"Paper's setting: {mod.PAPER}.")
    else:
        lines.append(f"Smaller than the paper ({mod.PAPER}); `--full` runs the paper's sizes.")
    return lines + ["", f"![{name}]({folder}{name}.png)", ""]


def untrained_section(name: str, result: dict, untrained: dict | None,
                      results: Path) -> list[str]:
    """The same experiment with the untrained rule, or the command that would run it."""
    lines = ["### Untrained rule (paper's θ init, not meta-trained)", ""]
    if UNTRAINED in result.get("rule_specs", ()):
        return lines + ["The `untrained` row of the table above (same run and settings).", ""]
    if untrained is None:
        cmd = experiments.command_line(name, result["size"], UNTRAINED, results / UNTRAINED)
        return lines + [f"Not run yet: `{cmd}`.", ""]
    init = result["rule"]["card"].get("init", "random")  # where the rule above started
    start = f" (the rule above started from `init:{init}` instead)" if init != "random" else ""
    return lines + [f"A control: the same experiment with the paper's random θ initialisation, "
                    f"untouched by meta-training{start}.", "", *measurement(
                        name, untrained, f"{UNTRAINED}/")]


def section(name: str, result: dict | None, untrained: dict | None,
            results: Path) -> list[str]:
    mod = experiments.module(name)
    lines = [f"## {mod.FIGURE}: {mod.TITLE} (`{name}`)", "", f"**Paper:** {mod.CLAIM}", ""]
    if result is None:
        cmd = f"metarule experiment {name}" + (" RUN_DIR" if name == "meta-curves" else "")
        return lines + [f"Not run yet: `{cmd}`.", ""]
    lines += ["**Ours:**", "", *measurement(name, result)]
    return lines + (untrained_section(name, result, untrained, results) if mod.USES_RULE else [])


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_report(results: str | Path = "results") -> Path:
    """Write results/README.md covering every experiment, run or not; returns its path."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for name in experiments.EXPERIMENTS:
        lines += section(name, read(results / f"{name}.json"),
                         read(results / UNTRAINED / f"{name}.json"), results)
    out = results / "README.md"
    out.write_text("\n".join(lines))
    return out
