"""The staged recipe: ES over the subspace, then truncated backprop from what ES chose."""
import json

import numpy as np
import pytest

from metarule import catalog, cli, es, outer, recipe
from metarule.config import ConfigError
from test_es import TINY_ES
from test_outer import TINY


def _staged():
    meta = outer.MetaTrainConfig(**TINY)
    return recipe.StagedConfig(es=es.ESConfig(meta=meta, **TINY_ES), tbptt=meta)


def test_the_second_stage_starts_from_the_first_and_a_finished_recipe_resumes_as_a_no_op(
        tmp_path):
    run = tmp_path / "staged"
    final = recipe.run(_staged(), run, hours=1e-4, progress=False)  # one step per stage
    assert {p.name for p in run.iterdir()} >= {"es", "tbptt", "theta.npz", "recipe.json"}
    stage2 = json.loads((run / "tbptt" / "config.json").read_text())
    assert stage2["init"] == str(run / "es" / "theta.npz")  # no evaluation: its last theta
    es_theta = catalog.read_rule_file(run / "es" / "theta.npz").theta
    start = catalog.start_theta(TINY["init"], _staged().tbptt.rule_cfg, None)
    assert not np.array_equal(es_theta["merge"], start["merge"])  # ES moved, stage 2 began there
    assert catalog.read_rule_file(final).card["recipe"] == "staged"
    before = final.read_bytes()
    steps = [len(open(run / s / "metrics.jsonl").readlines()) for s in ("es", "tbptt")]
    recipe.run(_staged(), run, hours=1e-4, resume=True, progress=False)
    assert [len(open(run / s / "metrics.jsonl").readlines()) for s in ("es", "tbptt")] == steps
    assert final.read_bytes() == before
    with pytest.raises(ConfigError, match="already holds a staged run"):
        recipe.run(_staged(), run, hours=1e-4, progress=False)


def test_a_stopped_first_stage_resumes_and_then_the_second_runs(tmp_path):
    run = tmp_path / "staged"
    cfg = _staged()
    recipe.run(cfg, run, hours=1e-4, progress=False)
    for stage in ("es", "tbptt"):  # as if stopped inside stage 1, after its first checkpoint
        (run / stage / "done.json").unlink()
    __import__("shutil").rmtree(run / "tbptt")
    recipe.run(cfg, run, hours=1e-4, resume=True, progress=False)
    assert (run / "tbptt" / "done.json").exists() and (run / "theta.npz").exists()


def test_the_staged_flags_are_checked():
    assert cli.main(["meta-train", "--recipe", "staged", "--steps", "3"]) == 2
    assert cli.main(["meta-train", "--recipe", "staged", "--hours", "1",
                     "--estimator", "pes"]) == 2
    with pytest.raises(ConfigError, match="es_share"):
        recipe.StagedConfig(es=_staged().es, tbptt=_staged().tbptt, es_share=1.5)
