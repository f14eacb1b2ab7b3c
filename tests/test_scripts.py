"""The decisions of the scripts: which rule ships (select_rule), whether tasks share a direction
(line_search), which inner steps and base-model shape a rule is used with (inner_horizon)."""
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest


def _load_script(name):
    """A script that imports its sibling scripts, as `python research/NAME.py` lets it."""
    scripts = str(Path(__file__).parents[1] / "research")
    sys.path.insert(0, scripts)
    try:
        spec = importlib.util.spec_from_file_location(name, Path(scripts) / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(scripts)


select_rule = _load_script("select_rule")
line_search = _load_script("line_search")
inner_horizon = _load_script("inner_horizon")
equal_compute = _load_script("equal_compute")


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


def test_line_search_tells_a_shared_direction_from_noise():
    rng = np.random.default_rng(0)
    noise = rng.standard_t(3, size=(128, 500))  # heavy tails, as the measured task gradients
    shared = noise + 3.0 * np.eye(500)[0]  # |mu|^2 = 9 against a noise trace of 1500
    found, none = line_search.held_out_t(shared), line_search.held_out_t(noise)
    assert found["t"] > found["t_null"] + 3
    assert abs(none["t"] - none["t_null"]) < 1.5
    d = line_search.directions(shared)
    assert d["sgd"][0] < -0.5 and np.argmin(d["adam"]) == 0  # both descend along -mu


def test_line_search_refuses_overlapping_or_mixed_gradient_files(tmp_path):
    meta = dict(rule="cpu-oja-v0", seed=0, datasets="glyphs14", estimator="truncated unroll 8")
    grads = np.ones((2, 3), np.float32)
    np.savez(tmp_path / "a.npz", grads=grads, first=0, stop=2, **meta)
    np.savez(tmp_path / "b.npz", grads=grads, first=1, stop=3, **meta)
    np.savez(tmp_path / "c.npz", grads=grads, first=2, stop=4, **(meta | {"seed": 1}))
    np.savez(tmp_path / "d.npz", grads=grads, first=2, stop=4, **meta)
    with pytest.raises(SystemExit, match="overlap"):
        line_search.load_grads([tmp_path / "a.npz", tmp_path / "b.npz"])
    with pytest.raises(SystemExit, match="another rule or task stream"):
        line_search.load_grads([tmp_path / "a.npz", tmp_path / "c.npz"])
    both, info = line_search.load_grads([tmp_path / "a.npz", tmp_path / "d.npz"])
    assert both.shape == (4, 3) and info["tasks"] == [(0, 2), (2, 4)]
    np.savez(tmp_path / "e.npz", grads=np.full((2, 3), np.nan), first=4, stop=6, **meta)
    kept, info = line_search.load_grads([tmp_path / "a.npz", tmp_path / "e.npz"])
    assert kept.shape == (2, 3) and info["dropped"] == 2  # diverged perturbations are dropped


def test_inner_horizon_scores_a_shape_repeatably():
    from types import SimpleNamespace

    from metarule import catalog
    rng = np.random.default_rng(0)
    y = np.arange(300) % 10
    x = (rng.random((300, 196)) + 0.2 * y[:, None] / 10).astype(np.float32)
    ds = SimpleNamespace(x_train=x[:200], y_train=y[:200], x_val=x[200:], y_val=y[200:],
                         num_classes=10)  # a validation split
    rule = catalog.load_rule("cpu-oja-v0")
    run = [inner_horizon.scores_along(rule, ds, [50], seed=1, shots=5, widths=(16, 16), draws=2,
                                      val_seeds=2) for _ in range(2)]
    assert run[0] == run[1]
    assert 0.0 < run[0]["meta_objective"][50] <= 2.0  # a cosine distance
    assert 0.0 <= run[0]["val_accuracy"][50] <= 1.0


def test_equal_compute_takes_the_last_snapshot_within_each_budget(tmp_path):
    from metarule import catalog, outer
    from test_outer import TINY
    cfg = outer.MetaTrainConfig(**{**TINY, "snapshot_every": 1})
    outer.run(cfg, tmp_path / "run", steps=3, progress=False)
    snaps = equal_compute.snapshots(tmp_path / "run")
    assert [step for _, step, _ in snaps] == [0, 1, 2, 3]
    cpu = [c for c, _, _ in snaps]
    assert cpu == sorted(cpu) and cpu[-1] > 0
    # each grid point takes the last snapshot at or before it; none fits before the first
    fake = [(600.0 * k, 10 * k, f"s{k}") for k in range(1, 7)]  # every 10 CPU-minutes
    picked = equal_compute.at_points(fake, 1.0, 4)  # 15, 30, 45, 60 CPU-minutes
    assert [(h, s[1]) for h, s in picked] == [(0.25, 10), (0.5, 30), (0.75, 40), (1.0, 60)]
    assert equal_compute.at_points(fake, 0.1, 1) == []
    card = catalog.read_rule_file(snaps[-1][2]).card
    assert card["outer_steps"] == 3 and card["cpu_seconds"] >= cpu[0]
