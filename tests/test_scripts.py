"""The decision rule of scripts/select_rule.py: which rule ships is decided by these functions."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "select_rule", Path(__file__).parents[1] / "scripts" / "select_rule.py")
select_rule = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(select_rule)


def _score(path, per_dataset_values):
    per_dataset = {name: {"mean": float(np.mean(v)),
                          "stderr": float(np.std(v, ddof=1) / math.sqrt(len(v))),
                          "values": list(v)}
                   for name, v in per_dataset_values.items()}
    return {"path": path, "per_dataset": per_dataset,
            "mean": float(np.mean([d["mean"] for d in per_dataset.values()]))}


def test_paired_difference_removes_the_shared_seed_variance():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.3, size=10)  # what every rule shares on a seed
    base = {"mnist14": 1.0 + seed_effect, "fashion_mnist14": 0.8 + seed_effect}
    better = {k: v - 0.05 + rng.normal(0, 0.005, size=10) for k, v in base.items()}
    a, b = _score("cand.npz", better), _score("shipped", base)
    diff, stderr = select_rule.difference(a, b)
    assert diff == pytest.approx(a["mean"] - b["mean"])
    assert diff == pytest.approx(-0.05, abs=0.01)
    # Unpaired, the seeds' spread (0.3 / sqrt(10) per rule) would hide a 0.05 gain entirely.
    assert stderr < 0.01 < math.hypot(select_rule.mean_stderr(a), select_rule.mean_stderr(b)) / 5
    assert select_rule.choose([a, b], "shipped") == "cand.npz"


def test_a_lead_inside_the_noise_keeps_the_incumbent():
    rng = np.random.default_rng(1)
    base = {"mnist14": rng.normal(1.0, 0.1, size=5), "fashion_mnist14": rng.normal(0.8, 0.1, 5)}
    noisy = {k: v + rng.normal(-0.02, 0.1, size=5) for k, v in base.items()}
    a, b = _score("cand.npz", noisy), _score("shipped", base)
    ranked = sorted([a, b], key=lambda s: s["mean"])
    diff, stderr = select_rule.difference(a, b)
    assert abs(diff) < 2 * stderr
    assert select_rule.choose(ranked, "shipped") == "shipped"


def test_a_diverged_candidate_never_replaces_the_incumbent():
    b = _score("shipped", {"mnist14": [0.9, 1.0, 1.1], "fashion_mnist14": [0.8, 0.9, 1.0]})
    a = _score("cand.npz", {"mnist14": [0.5, 0.6, 0.7], "fashion_mnist14": [0.7, 0.8, 0.9]})
    # objective() records a dataset on which the base model diverged as one NaN value.
    a["per_dataset"]["mnist14"] = {"mean": math.nan, "stderr": math.nan, "values": [math.nan]}
    a["mean"] = math.nan
    diff, _ = select_rule.difference(a, b)
    assert math.isnan(diff)
    assert select_rule.choose([a, b], "shipped") == "shipped"
