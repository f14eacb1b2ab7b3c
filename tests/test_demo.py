"""`metarule demo` end to end at tiny sizes."""
import argparse
import json

import jax
import numpy as np

from metarule import base_model, data, demo, evaluate
from metarule.config import BaseModelConfig
from metarule.experiments import common


def test_demo_writes_figures_and_four_row_table(tmp_path, capsys):
    args = argparse.Namespace(rule="init:oja", steps=2, out=str(tmp_path / "demo"))
    returned = demo.run(args, n_test=200, seeds=2, widths=(16, 16), preset="tiny")
    out = tmp_path / "demo"
    assert returned["out"] == str(out)
    for png in ("first_layer_filters.png", "embedding.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "demo.json").read_text())
    methods = [row["method"] for row in result["table"]]
    assert methods == ["rule init:oja (2 steps)", "untrained rule (2 steps)",
                       "random initialisation", "PCA-32"]
    rows = {row["method"]: row for row in result["table"]}
    assert all(len(row["accuracies"]) == 2 for row in result["table"])
    # 10-way chance is 0.1; measured 0.32-0.34 for the three base models, 0.735 for PCA-32.
    assert rows["PCA-32"]["mean"] > 0.6
    assert all(row["mean"] > 0.2 for row in result["table"])
    # The random-initialisation row scores the seed-0 network on the demo's test subset.
    ds = common.subset(data.load("mnist14"), None, 200)
    init = base_model.init(jax.random.PRNGKey(0), BaseModelConfig(input_dim=196, hidden=(16, 16)))
    direct = common.score(evaluate.model_embed_fn(init), ds, seeds=2)
    np.testing.assert_allclose(rows["random initialisation"]["accuracies"],
                               direct["accuracies"], atol=1e-9)
    assert result["n_test"] == 200 and result["steps"] == 2
    printed = capsys.readouterr().out
    assert "PCA-32" in printed and "Wrote" in printed


def test_demo_keeps_the_other_files_of_its_output_folder(tmp_path):
    # `metarule demo --out results` shares its folder with every experiment's results.
    (tmp_path / "datasets.json").write_text("{}")
    (tmp_path / "demo.json").write_text("an earlier demo")
    args = argparse.Namespace(rule="init:oja", steps=2, out=str(tmp_path))
    demo.run(args, n_test=200, seeds=2, widths=(16, 16), preset="tiny")
    assert (tmp_path / "datasets.json").read_text() == "{}"
    assert json.loads((tmp_path / "demo.json").read_text())["steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "datasets.json", "demo.json", "embedding.png", "first_layer_filters.png"]


def test_demo_says_when_the_rule_is_untrained(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo.catalog, "shipped_rules", lambda: [])
    args = argparse.Namespace(rule=None, steps=2, out=str(tmp_path))
    demo.run(args, n_test=200, seeds=2, widths=(16, 16), preset="tiny")
    assert "No meta-trained rule ships" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "demo.json").read_text())["table"]) == 3
