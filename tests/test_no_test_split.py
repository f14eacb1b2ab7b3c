"""Nothing that chooses reads a test split: meta-training (tasks, continuous evaluation, the best
theta) and rule selection see only training splits and the validation rows carved from them."""
import numpy as np
import pytest

from metarule import data, outer
from test_outer import TINY
from test_scripts import inner_horizon, select_rule


class ReadTestSplit(AssertionError):
    pass


class Tripwire:
    """Stands in for a test split: any use of it fails the test."""

    def __init__(self, where: str):
        self.where = where

    def _fail(self, *_, **__):
        raise ReadTestSplit(f"the test split of {self.where} was read")

    __getattr__ = __getitem__ = __array__ = __len__ = __iter__ = _fail


@pytest.fixture
def tripwired(monkeypatch):
    """data.load with every test split replaced by a Tripwire."""
    load = data.load

    def guarded(name, *args, **kwargs):
        ds = load(name, *args, **kwargs)
        object.__setattr__(ds, "x_test", Tripwire(ds.name))
        object.__setattr__(ds, "y_test", Tripwire(ds.name))
        return ds
    monkeypatch.setattr(data, "load", guarded)
    return guarded


def test_the_tripwire_catches_a_read(tripwired):
    ds = data.load("moons")
    for use in (lambda: ds.x_test[:10], lambda: np.asarray(ds.y_test), lambda: ds.x_test.shape):
        with pytest.raises(ReadTestSplit):
            use()


def test_validation_split_is_fixed_disjoint_and_from_the_training_split():
    ds = data.load("moons")
    a, b = data.validation_split(ds), data.validation_split(ds)
    n = len(ds.x_train)
    assert len(a.x_val) == n // 6 and len(a.x_train) == n - n // 6
    np.testing.assert_array_equal(a.x_val, b.x_val)  # the same rows for every command
    rows = {r.tobytes() for r in ds.x_train}
    val = {r.tobytes() for r in a.x_val}
    assert val <= rows and not val & {r.tobytes() for r in a.x_train}


def test_meta_training_with_evaluation_never_reads_a_test_split(tripwired, tmp_path):
    cfg = outer.MetaTrainConfig(**{**TINY, "eval_every_s": 1e-3, "eval_datasets": ("mnist14",),
                                   "eval_steps": 4, "eval_seeds": 2, "eval_widths": (8,)})
    outer.run(cfg, tmp_path / "run", steps=2, progress=False)
    assert (tmp_path / "run" / "theta_best.npz").is_file()  # evaluated and chose, blind to test


def test_rule_selection_never_reads_a_test_split(tripwired):
    from metarule import catalog
    ds = data.validation_split(data.load("mnist14"))
    rule = catalog.load_rule("cpu-oja-v0")
    score = select_rule.objective(rule, {"mnist14": ds}, steps=4, seeds=range(2), widths=(8,),
                                  shots=3)
    assert np.isfinite(score["mnist14"]["mean"])
    run = inner_horizon.scores_along(rule, ds, [50], seed=0, shots=3, widths=(8,), draws=1,
                                     val_seeds=1)
    assert np.isfinite(run["meta_objective"][50])
