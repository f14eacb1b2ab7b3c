"""Every experiment end to end at its tiny size, then the report built from their results."""
import json

import numpy as np
import pytest

from metarule import catalog, cli, experiments, report, train

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


TINY_RUNS = [n for n in experiments.EXPERIMENTS if n != "meta-curves"]


@pytest.fixture(scope="module")
def results(out):
    """Every experiment but meta-curves run once at its tiny size; name -> returned result."""
    return {name: experiments.run_experiment(name, "tiny", RULE, out, progress=False)
            for name in TINY_RUNS}


def scores(tree, path=""):
    """Every score record (a dict with per-draw `accuracies` and their `mean`) in a result."""
    if isinstance(tree, dict):
        if "accuracies" in tree and "mean" in tree:
            yield path, tree
        for key, value in tree.items():
            yield from scores(value, f"{path}/{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from scores(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", TINY_RUNS)
def test_experiment_tiny(name, results, out):
    saved = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.png").stat().st_size > 1000
    assert saved["experiment"] == name and saved["size"] == "tiny"
    if experiments.module(name).USES_RULE:  # the recorded rule is the one asked for
        assert saved["rule"]["spec"] == RULE
        assert saved["rule"]["sha256"] == train.theta_digest(catalog.load_rule(RULE).theta)
    assert saved["command"] == f"metarule experiment {name} --tiny --rule {RULE} --out {out}"
    # each reported mean and standard error is that of the draws it lists
    for path, record in scores(saved):
        acc = record["accuracies"]
        assert len(acc) >= 2, path
        np.testing.assert_allclose(record["mean"], np.mean(acc), rtol=1e-12, err_msg=path)
        np.testing.assert_allclose(record["stderr"], np.std(acc, ddof=1) / np.sqrt(len(acc)),
                                   rtol=1e-9, atol=1e-12, err_msg=path)
    assert experiments.module(name).summary(saved)
    assert experiments.module(name).reading(saved).endswith(".")


def test_experiments_agree_on_a_shared_setting(results):
    """permutation's intact curve, widths-depths' 16x16 curve and the datasets table's init:oja
    row are one measurement (rule, data subset, network, steps and draws alike): equal numbers."""
    intact = results["permutation"]["datasets"]["mnist14"]["intact"]
    by_width = results["widths-depths"]["by_width"]["16"]
    assert [(r["step"], r["accuracies"]) for r in intact] == \
        [(r["step"], r["accuracies"]) for r in by_width]
    rows = {r["method"]: r for r in results["datasets"]["datasets"]["mnist14"]}
    assert [(r["step"], r["accuracies"]) for r in rows[RULE]["curve"]] == \
        [(r["step"], r["accuracies"]) for r in intact[1:]]
    assert rows["random init"]["accuracies"] == intact[0]["accuracies"]  # step 0: the init


def test_experiment_accuracies_clear_chance(results):
    """Floors well above chance where the method is known to work even at the tiny size (so a
    broken readout, label order or data split fails); measured values in the comments."""
    rows = {r["method"]: r for r in results["datasets"]["datasets"]["mnist14"]}
    assert rows["PCA"]["mean"] > 0.6                        # 10-way; measured 0.78
    assert rows["supervised"]["mean"] > rows["random init"]["mean"] + 0.1  # 0.56 vs 0.355
    assert all(r["mean"] > 0.25 for r in rows.values())    # every method; measured >= 0.355
    protonet = results["protonets-shuffle"]["rows"][0]
    assert protonet["method"] == "protonet, intact" and protonet["mean"] > 0.45  # 5-way; 0.72
    moons = results["embeddings"]["datasets"]["moons"]["accuracy"]
    assert min(moons["before"]["mean"], moons["after"]["mean"]) > 0.75  # 2-way; 0.885, 0.8875


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
