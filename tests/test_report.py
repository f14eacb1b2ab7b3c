"""One source for every number: README's results block is what `metarule report` writes from
results/*.json, and every relative link in the repository's Markdown resolves."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from metarule import report

ROOT = Path(__file__).parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_block_is_what_report_generates_from_the_results():
    text = (ROOT / "README.md").read_text()
    start, end = text.index(report.BEGIN), text.index(report.END) + len(report.END)
    assert text[start:end] == report.readme_block(ROOT / "results"), \
        "README.md's results block is stale: run `metarule report`"


def _demo(mean_rule: float) -> dict:
    row = {"mean": mean_rule, "stderr": 0.01, "accuracies": []}
    return {"dataset": "mnist14", "rule": {"spec": "r", "meta_trained": False, "sha256": "ab"},
            "steps": 500, "widths": [8, 8], "seeds": 5, "n_test": 100, "date": "2026-01-01T00",
            "table": [{"method": "rule r (500 steps)", **row},
                      {"method": "random initialisation", **row, "mean": 0.3},
                      {"method": "untrained rule (500 steps)", "mean": None, "stderr": None,
                       "accuracies": [], "note": "diverged"}]}


def test_the_shipped_rules_test_split_table_comes_from_its_json(tmp_path):
    score = {"mnist14": {"mean": 0.709, "stderr": 0.008}}
    (tmp_path / report.SHIPPED_TEST).write_text(json.dumps({
        "protocol": {"command": "metarule eval", "note": "one base model"},
        "scores": {"new": score, "old": {"mnist14": {"mean": 0.667, "stderr": 0.005}}}}))
    text = report.write_report(tmp_path, readme=tmp_path / "none.md").read_text()
    assert "| dataset | `new` | `old` |" in text
    assert "| MNIST 14×14 | 70.9 ± 0.8 | 66.7 ± 0.5 |" in text
    assert report.shipped_test(tmp_path / "empty") == []  # no file, no section


def test_update_readme_rewrites_only_the_marked_block(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / report.DEMO).write_text(json.dumps(_demo(0.612)))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold numbers\n{report.END}\noutro\n")
    report.write_report(results)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert "old numbers" not in text
    assert "| 61.2 ± 1.0 |" in text and "| 30.0 ± 1.0 |" in text
    assert "**demo**: `metarule demo --out results`" in text  # the protocol behind the column is named
    assert "untrained rule" not in text.split("Protocols:")[0]  # a diverged method has no cell
    assert "61.2 ± 1.0" in (results / "README.md").read_text()


def test_a_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"no block here\n{report.END}\n")
    assert not report.update_readme(readme, tmp_path)
    assert readme.read_text() == f"no block here\n{report.END}\n"


def _markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                            text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.stdout.split()]


def test_every_relative_link_in_the_markdown_resolves():
    broken = []
    for md in _markdown_files():
        for target in LINK.findall(md.read_text()):
            path = target.split("#")[0]
            if not path or re.match(r"[a-z]+:", path):  # an anchor, or a URL
                continue
            if not (md.parent / path).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert not broken, broken
