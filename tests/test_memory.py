"""The memory estimate: close to XLA's own count, and a model that cannot fit is refused with
one line naming both sizes before any XLA work."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarule import base_model, catalog, cli, memory, outer, rule, train
from metarule.config import BaseModelConfig, ConfigError, preset


def test_estimate_is_within_a_factor_of_two_of_what_xla_allocates():
    cfg = preset("tiny")
    widths = (64, 128, 128, 32)
    mcfg = BaseModelConfig(widths[0], hidden=widths[1:-1], embedding=widths[-1])
    args = (rule.init_theta(jax.random.PRNGKey(1), cfg),
            base_model.init(jax.random.PRNGKey(0), mcfg), jnp.ones((cfg.inner_batch, 64)))
    compiled = jax.jit(lambda t, p, x: rule.unsupervised_update(t, p, x, cfg)).lower(
        *args).compile()
    stats = compiled.memory_analysis()
    xla = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
    estimate = memory.estimate_bytes(widths, cfg.inner_batch, cfg)
    assert xla / 2 <= estimate <= 2 * xla, (estimate, xla)
    # It grows with each of the sizes it is for.
    assert memory.estimate_bytes((64, 256, 128, 32), cfg.inner_batch, cfg) > estimate
    assert memory.estimate_bytes(widths, 2 * cfg.inner_batch, cfg) > estimate
    assert memory.estimate_bytes(widths, cfg.inner_batch, preset("paper")) > estimate
    assert memory.estimate_bytes(widths, cfg.inner_batch, cfg, copies=4) > 3 * estimate


@pytest.mark.parametrize("text,size", [("123", 123), ("8G", 8 * 2 ** 30), ("1.5k", 1536),
                                       ("2TB", 2 * 2 ** 40), ("inf", float("inf"))])
def test_limit_override_sizes(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "nan"])
def test_a_bad_limit_override_is_one_clear_error(text):
    with pytest.raises(ConfigError, match="METARULE_MEMORY_LIMIT must be a size"):
        memory.parse_size(text)


def test_available_memory_is_the_machines_unless_overridden(monkeypatch):
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    free, source = memory.available_bytes()
    assert 0 < free < float("inf") and source in ("available", "free")
    monkeypatch.setenv(memory.LIMIT_ENV, "3M")
    assert memory.available_bytes() == (3 * 2 ** 20, "set by $METARULE_MEMORY_LIMIT")


def _no_xla(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("XLA work before the memory check")
    monkeypatch.setattr(catalog, "load_rule", forbidden)
    monkeypatch.setattr(base_model, "init", forbidden)


def test_train_refuses_a_model_too_wide_before_any_xla_work(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    _no_xla(monkeypatch)
    out = tmp_path / "model"
    status = cli.main(["train", "--data", "patches16", "--rule", "untrained", "--steps", "3",
                       "--widths", "10000000", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1
    assert "training this base model needs about" in err and "GiB of memory" in err
    assert "GiB available" in err and "METARULE_MEMORY_LIMIT" in err


def test_the_limit_applies_to_the_python_api_and_to_meta_training(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "1M")
    x = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    theta = {"unused": np.zeros(1)}
    monkeypatch.setattr(base_model, "init", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(memory.MemoryLimitError, match=r"needs about .* more than the 1.0 MiB "
                                                      r"set by \$METARULE_MEMORY_LIMIT"):
        train.train_base_model(catalog.Rule(theta, preset("cpu"), "r", {}), x, 1,
                               widths=(4096,))
    monkeypatch.setenv(memory.LIMIT_ENV, "10K")
    cfg = outer.MetaTrainConfig(preset="tiny", datasets=("patches16",), dataset_weights=(1.0,),
                                widths=(8,), depths=(1,), ways=(4,), shots=3, budget=(6, 6))
    group = outer.sample_group(outer.TaskSampler(outer.task_config(cfg), 0), cfg, 0)
    with pytest.raises(memory.MemoryLimitError, match="meta-training 4 tasks at once"):
        outer.init_group_params(group, cfg)
