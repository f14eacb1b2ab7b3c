"""`metarule report`: results/README.md, and the results block of README.md, from the JSON results.

Every number in those tables comes from a `*.json` file in the results folder, so the two cannot
disagree; each column names the protocol (command, inner steps, seeds, test images) behind it.
"""
from __future__ import annotations

import json
from pathlib import Path

from metarule import experiments
from metarule.catalog import INITIAL_RULES

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
    origin = ""
    if {"init", "outer_steps", "seconds"} <= set(card):
        # a named start is an init: spec; a shipped rule or a file is named as it is
        start = f"init:{card['init']}" if card["init"] in INITIAL_RULES else card["init"]
        steps = (f"{card['outer_steps']} generations of {card['estimator'].upper()}"
                 if card.get("estimator") in ("es", "pes") else f"{card['outer_steps']} outer steps")
        origin = (f" from `{start}` for {steps}, {card['seconds']} s = "
                  f"{card['seconds'] / 3600:.1f} h")
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


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"  # README.md's generated block
DEMO = "demo.json"  # written by `metarule demo --out RESULTS`, with the demo's two figures
HEADLINE_DATASETS = ("mnist14", "fashion_mnist14")
DATASET_NAMES = {"mnist14": "MNIST 14×14", "fashion_mnist14": "Fashion-MNIST 14×14"}
# Headline rows: key, label. "rule" is the meta-trained rule each protocol applied.
ROWS = (("rule", None), ("untrained", "untrained rule (the paper's θ init)"),
        ("random", "random initialisation, no training"), ("pca", "PCA to 32 dimensions"),
        ("vae", "VAE"), ("supervised", "supervised on the 100 labeled examples"))


def percent(row: dict) -> str:
    return f"{100 * row['mean']:.1f} ± {100 * row['stderr']:.1f}"


def demo_key(method: str) -> str | None:
    """The headline row of one of `metarule demo`'s methods."""
    for prefix, key in (("rule ", "rule"), ("untrained rule", "untrained"),
                        ("random initialisation", "random"), ("PCA", "pca")):
        if method.startswith(prefix):
            return key
    return None


def datasets_key(method: str, rule_spec: str) -> str | None:
    """The headline row of one of the `datasets` experiment's methods (classic starts: none)."""
    keys = {rule_spec: "rule", "untrained": "untrained", "random init": "random", "PCA": "pca",
            "VAE": "vae", "supervised": "supervised"}
    return keys.get(method)


def headline_columns(results: Path) -> list[tuple[str, dict[str, str], str]]:
    """(column title, {row key: accuracy}, protocol line) for each protocol that has a result."""
    columns = []
    demo = read(results / DEMO)
    if demo is not None and demo["dataset"] in DATASET_NAMES:
        cells = {demo_key(r["method"]): percent(r) for r in demo["table"] if r["mean"] is not None}
        widths = "×".join(map(str, demo["widths"]))
        columns.append((f"{DATASET_NAMES[demo['dataset']]}, demo", cells,
                        f"**demo**: `metarule demo --out results` ({demo['date'][:10]}): {demo['steps']} inner "
                        f"steps of the rule on a {widths} → 32 base model, logistic readout on "
                        f"all {demo['n_test']} test images, {demo['seeds']} draws of the labeled "
                        f"examples; rule {describe_rule(demo['rule'])}."))
    sets = read(results / "datasets.json")
    if sets is not None:
        s = sets["setting"]
        for name in HEADLINE_DATASETS:
            rows = sets["datasets"].get(name, [])
            cells = {datasets_key(r["method"], sets["rule"]["spec"]): percent(r) for r in rows}
            columns.append((f"{DATASET_NAMES[name]}, datasets", cells, ""))
        columns[-1] = (*columns[-1][:2],
                       f"**datasets**: `{sets['command']}` ({sets['date'][:10]}; the Fig. 4 "
                       f"experiment): {s['eval_steps'][-1]} inner "
                       f"steps of the rule, VAE {s['vae_steps']} steps, supervised "
                       f"{s['supervised_steps']} steps, {s['seeds']} seeds, {s['n_test']} test "
                       f"images; rule {describe_rule(sets['rule'])}.")
    return columns


def headline(results: Path) -> list[str]:
    """The shipped rule against the baselines, one column per protocol, from the JSON results."""
    columns = headline_columns(results)
    intro = ("10-shot accuracy (%, mean ± standard error) of the base model's 32-d embedding "
             "with a logistic readout, written by `metarule report` from the results folder's "
             f"`{DEMO}` and `datasets.json`. Each column is one protocol; protocols differ in "
             "inner steps, seeds and test images, so compare numbers within a column.")
    if not columns:
        return [intro, "", "No headline results: run `metarule demo --out RESULTS` and "
                           "`metarule experiment datasets --out RESULTS`.", ""]
    lines = [intro, "", "| features | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for key, label in ROWS:
        cells = [c[1].get(key, "—") for c in columns]
        if any(cell != "—" for cell in cells):
            lines.append(f"| {label or 'meta-trained rule (named under Protocols)'} | " + " | ".join(cells) + " |")
    lines += ["", "Protocols:", ""] + [f"- {c[2]}" for c in columns if c[2]]
    return lines + [""]


SHIPPED_TEST = "shipped_rule_test.json"  # the shipped rules, read once on the test split


def shipped_test(results: Path) -> list[str]:
    """The shipped rules side by side on the test split (docs/meta_training.md)."""
    found = read(results / SHIPPED_TEST)
    if found is None:
        return []
    rules = list(found["scores"])
    lines = ["## The shipped rules on the test split (`shipped_rule_test`)", "",
             f"`{found['protocol']['command']}`, read once after the default rule was chosen on "
             f"validation rows ({found['protocol']['note']}; docs/meta_training.md).", "",
             "| dataset | " + " | ".join(f"`{r}`" for r in rules) + " |",
             "|---|" + "---:|" * len(rules)]
    for name in found["scores"][rules[0]]:
        lines.append(f"| {DATASET_NAMES.get(name, name)} | "
                     + " | ".join(percent(found["scores"][r][name]) for r in rules) + " |")
    return lines + [""]


def readme_block(results: Path) -> str:
    """README.md's generated block, markers included."""
    return "\n".join([BEGIN, *headline(results), END])


def update_readme(readme: Path, results: Path) -> bool:
    """Replace the block between README.md's markers; False (file untouched) if it has none."""
    text = readme.read_text() if readme.is_file() else ""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    new = text[:start] + readme_block(results) + text[end + len(END):]
    if new != text:
        tmp = readme.with_suffix(".md.tmp")  # written whole, then renamed: never half a README
        tmp.write_text(new)
        tmp.replace(readme)
    return True


def write_report(results: str | Path = "results", readme: str | Path | None = None) -> Path:
    """Write results/README.md covering every experiment, run or not, and refresh the results
    block of `readme` (default: README.md next to the results folder) if it has one; returns
    results/README.md's path."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    lines = [HEADER, "## The shipped rule against the baselines (`headline`)", "",
             *headline(results), *shipped_test(results)]
    for name in experiments.EXPERIMENTS:
        lines += section(name, read(results / f"{name}.json"),
                         read(results / UNTRAINED / f"{name}.json"), results)
    out = results / "README.md"
    out.write_text("\n".join(lines))
    update_readme(Path(readme) if readme is not None else results.parent / "README.md", results)
    return out
