"""Every experiment end to end at its tiny size, then the report built from their results."""
import json

import pytest

from metarule import cli, experiments, report

RULE = "init:oja"  # a cheap, deterministic rule; the default would be the first shipped one


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A fake meta-training run: training lines and eval lines for two datasets."""
    folder = tmp_path_factory.mktemp("run")
    lines = [{"step": i, "time_s": 60.0 * i, "meta_loss": 1.0 - 0.01 * i} for i in range(30)]
    lines += [{"kind": "eval", "step": i, "time_s": 60.0 * i, "dataset": d,
               "meta_objective": 0.9 - 0.01 * i, "accuracy": 0.3 + 0.01 * i}
              for i in (0, 10, 20) for d in ("mnist14", "polarity")]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return folder


@pytest.mark.parametrize("name", [n for n in experiments.EXPERIMENTS if n != "meta-curves"])
def test_experiment_tiny(name, out):
    result = experiments.run_experiment(name, "tiny", RULE, out, progress=False)
    saved = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.png").stat().st_size > 1000
    assert saved["experiment"] == name and saved["size"] == "tiny"
    if experiments.module(name).USES_RULE:
        assert saved["rule"]["spec"] == RULE and len(saved["rule"]["sha256"]) == 12
    assert saved["command"] == f"metarule experiment {name} --tiny --rule {RULE} --out {out}"
    assert saved == json.loads(json.dumps(result))
    assert experiments.module(name).summary(saved)
    assert experiments.module(name).reading(saved).endswith(".")


def test_meta_curves(run_dir, out):
    result = experiments.run_experiment("meta-curves", "tiny", out=out, run_dir=run_dir,
                                        progress=False)
    assert result["rule"] is None
    assert result["final"]["step"] == 29
    assert set(result["eval"]) == {"mnist14", "polarity"}
    assert (out / "meta-curves.png").is_file()


def test_meta_curves_needs_metrics(tmp_path):
    with pytest.raises(experiments.ExperimentError, match="no metrics.jsonl"):
        experiments.run_experiment("meta-curves", "tiny", out=tmp_path, run_dir=tmp_path)


def test_unknown_experiment():
    with pytest.raises(experiments.ExperimentError, match="unknown experiment"):
        experiments.module("nope")


def test_report_covers_every_experiment(out, tmp_path):
    text = report.write_report(out).read_text()
    for name in experiments.EXPERIMENTS:
        assert f"(`{name}`)" in text
        assert f"![{name}]({name}.png)" in text or "Not run yet" in text
    assert "Smaller than the paper" in text
    assert text.count("**Reading:**") == len(experiments.EXPERIMENTS)
    by_name = sections(text)
    assert "The `untrained` row of the table above" in by_name["datasets"]
    assert all(("### Untrained rule" in by_name[n]) == experiments.module(n).USES_RULE
               for n in experiments.EXPERIMENTS)
    empty = report.write_report(tmp_path).read_text()
    assert empty.count("Not run yet") == len(experiments.EXPERIMENTS)


def sections(text: str) -> dict[str, str]:
    """The report's sections by experiment name (the first `name` in each heading)."""
    return {part.split("`")[1]: part for part in text.split("\n## ")[1:]}


def test_report_untrained_subsection(tmp_path, capsys):
    """A rule experiment's section shows its untrained-rule run, or the command that makes it."""
    experiments.run_experiment("permutation", "tiny", RULE, tmp_path, progress=False)
    untrained = tmp_path / "untrained"
    cmd = f"metarule experiment permutation --tiny --rule untrained --out {untrained}"
    text = sections(report.write_report(tmp_path).read_text())["permutation"]
    assert f"not meta-trained)\n\nNot run yet: `{cmd}`." in text
    assert cli.main(cmd.split()[1:]) == 0
    text = sections(report.write_report(tmp_path).read_text())["permutation"]
    sub = text.split("### Untrained rule")[1]
    assert "Not run yet" not in sub and "**Reading:**" in sub
    assert "Rule: `untrained` (not meta-trained" in sub and f"Command: `{cmd}`" in sub
    assert "![permutation](untrained/permutation.png)" in sub
