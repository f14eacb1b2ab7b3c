"""`metarule demo` end to end at tiny sizes."""
import argparse
import json

from metarule import demo


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
    assert all(0.0 <= row["mean"] <= 1.0 and len(row["accuracies"]) == 2
               for row in result["table"])
    assert result["n_test"] == 200 and result["steps"] == 2
    printed = capsys.readouterr().out
    assert "PCA-32" in printed and "Wrote" in printed


def test_demo_says_when_the_rule_is_untrained(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo.catalog, "shipped_rules", lambda: [])
    args = argparse.Namespace(rule=None, steps=2, out=str(tmp_path))
    demo.run(args, n_test=200, seeds=2, widths=(16, 16), preset="tiny")
    assert "No meta-trained rule ships" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "demo.json").read_text())["table"]) == 3
