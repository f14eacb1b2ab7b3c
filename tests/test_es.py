"""Evolution strategies over a subspace of theta: the estimate, the shared noise, resumption."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from metarule import catalog, es, outer, subspace
from metarule.config import ConfigError
from test_outer import TINY

TINY_ES = dict(pairs=2, horizon=(6, 6), horizon_quantum=3, truncation=3, draws=2)


def _theta0():
    cfg = outer.MetaTrainConfig(**TINY)
    return catalog.start_theta(cfg.init, cfg.rule_cfg, jax.random.PRNGKey(0))


def test_subspace_starts_at_theta0_and_moves_only_its_groups():
    theta0 = _theta0()
    space = subspace.make(theta0, ("merge", "gains", "readout_scales"))
    assert space.dim == len(theta0["merge"]) + 3 + 2
    same = space.to_theta(jnp.zeros(space.dim))
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(theta0)):
        np.testing.assert_array_equal(a, b)
    z = jnp.zeros(space.dim).at[0].set(1.0)                 # the first plane's merge weight
    moved = space.to_theta(z)
    rms = float(jnp.sqrt(jnp.mean(jnp.square(theta0["merge"]))))
    np.testing.assert_allclose(moved["merge"][0] - theta0["merge"][0], rms, rtol=1e-5)
    np.testing.assert_array_equal(moved["merge"][1:], theta0["merge"][1:])
    gain = space.to_theta(jnp.zeros(space.dim).at[len(theta0["merge"])].set(np.log(2.0)))
    np.testing.assert_allclose(gain["top_d"]["unit1"], 2 * theta0["top_d"]["unit1"], rtol=1e-5)
    np.testing.assert_array_equal(gain["compute_h"]["unit1"], theta0["compute_h"]["unit1"])
    everything = subspace.make(theta0, ("all",))
    assert everything.dim == sum(a.size for a in jax.tree_util.tree_leaves(theta0))


@pytest.mark.parametrize("text", ["", "merge,bogus", "all,merge", "merge,merge"])
def test_subspace_names_are_checked(text):
    with pytest.raises(ConfigError):
        subspace.parse(text)


def test_es_estimate_agrees_with_the_exact_gradient_on_a_smooth_objective():
    """One Open-ES generation with SGD of step 1 moves the mean by minus its gradient estimate;
    on a quadratic with 256 antithetic pairs it points along the exact gradient, about as long."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=6)
    loss = lambda z: 0.5 * np.sum(np.square(z @ a.T - b), axis=-1)  # noqa: E731
    cfg = es.ESConfig(meta=outer.MetaTrainConfig(**TINY), pairs=256, sigma=0.01, lr=1.0,
                      optimizer="sgd")
    algo, params = es.strategy(cfg, 6)
    state = es.init_state(cfg, algo, params)
    seen = []

    def evaluate(zs, state):
        seen.append(zs)
        return loss(zs), None
    new, _ = es.generation_step(cfg, algo, params, state, evaluate)
    estimate = -np.asarray(algo.get_mean(jax.tree_util.tree_map(jnp.asarray, new.search)))
    exact = a.T @ (-b)                                       # grad of the loss at z = 0
    cosine = estimate @ exact / np.linalg.norm(estimate) / np.linalg.norm(exact)
    assert cosine > 0.95 and 0.8 < np.linalg.norm(estimate) / np.linalg.norm(exact) < 1.25
    zs = seen[0]
    np.testing.assert_allclose(zs[:256] + zs[256:], 0.0, atol=1e-6)  # member i + pairs: its pair


def test_members_share_tasks_batches_and_draws_within_a_generation():
    cfg = es.ESConfig(meta=outer.MetaTrainConfig(**TINY), **TINY_ES)
    evaluator = es.Evaluator(cfg, _theta0())
    dim = evaluator.space.dim
    z = np.zeros((4, dim), np.float32)
    z[2:, 0] = 0.5
    scores = evaluator.es(z, generation=0)
    assert scores[0] == scores[1] and scores[2] == scores[3]  # same z, same noise: same score
    assert scores[0] != scores[2]                             # theta moved the score
    assert evaluator.es(z, generation=1)[0] != scores[0]     # another generation, other tasks


def test_a_resumed_es_run_continues_bit_for_bit(tmp_path):
    cfg = es.ESConfig(meta=outer.MetaTrainConfig(**TINY), **TINY_ES)
    es.run(cfg, tmp_path / "full", steps=4, progress=False)
    es.run(cfg, tmp_path / "split", steps=2, progress=False)
    es.run(cfg, tmp_path / "split", steps=2, resume=True, progress=False)
    full = catalog.read_rule_file(tmp_path / "full" / "theta.npz").theta
    split = catalog.read_rule_file(tmp_path / "split" / "theta.npz").theta
    for x, y in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(split)):
        np.testing.assert_array_equal(x, y)
    rows = [[{k: v for k, v in r.items() if k not in ("time_s", "cpu_s", "members_per_s")}
             for r in map(__import__("json").loads, open(p / "metrics.jsonl"))]
            for p in (tmp_path / "full", tmp_path / "split")]
    assert rows[0] == rows[1] and [r["step"] for r in rows[1]] == [0, 1, 2, 3]
    # the CPU clock is carried across the resume: equal-compute comparisons read it
    cpu = [r["cpu_s"] for r in map(__import__("json").loads, open(tmp_path / "split" /
                                                                   "metrics.jsonl"))]
    assert cpu[0] > 0 and cpu == sorted(cpu)


def test_pes_members_persist_across_truncations(tmp_path):
    cfg = es.ESConfig(meta=outer.MetaTrainConfig(**TINY), estimator="pes", **TINY_ES)
    state = es.run(cfg, tmp_path / "pes", steps=3, progress=False)
    assert es.pes_truncations(cfg) == 2
    assert state.generation == 3 and state.member_params is not None  # mid-episode
    rows = [__import__("json").loads(line) for line in open(tmp_path / "pes" / "metrics.jsonl")]
    assert all(np.isfinite(r["meta_loss"]) for r in rows)


def test_meta_train_flags_build_the_es_config():
    from metarule import cli
    args = cli.build_parser().parse_args(
        ["meta-train", "--estimator", "pes", "--subspace", "merge,gains", "--pairs", "3",
         "--sigma", "0.2", "--es-lr", "0.01", "--horizon", "100,300", "--truncation", "25",
         "--draws", "2", "--out", "r"])
    cfg, _ = cli.meta_train_config(args)
    got = cli.es_config(args, cfg)
    assert (got.estimator, got.subspace, got.pairs, got.sigma, got.lr, got.horizon,
            got.truncation, got.draws) == ("pes", ("merge", "gains"), 3, 0.2, 0.01, (100, 300),
                                           25, 2)
    assert got.meta == cfg
    bad = cli.build_parser().parse_args(["meta-train", "--estimator", "es", "--lr", "1e-3"])
    with pytest.raises(ConfigError, match="--es-lr"):
        cli.es_config(bad, cli.meta_train_config(bad)[0])
    assert cli.main(["meta-train", "--estimator", "es", "--subspace", "bogus"]) == 2


def test_the_ray_backend_scores_members_as_one_process_does(tmp_path):
    ray = pytest.importorskip("ray")
    from metarule import distributed
    cfg = es.ESConfig(meta=outer.MetaTrainConfig(**TINY), **TINY_ES)
    theta0 = _theta0()
    local = es.Evaluator(cfg, theta0)
    zs = np.random.default_rng(0).normal(0, 0.3, (4, local.space.dim)).astype(np.float32)
    state = es.ESState(None, None, 1, None, 0.0)
    started = distributed.connect(None, 2)
    try:
        remote, _ = es.ray_evaluate(cfg, theta0, 2)(zs, state)
    finally:
        if started:
            ray.shutdown()
    np.testing.assert_allclose(remote, local.es(zs, 1), rtol=1e-5)
    es.run(cfg, tmp_path / "ray", steps=2, progress=False, backend="ray", workers=2)
    assert not ray.is_initialized() and (tmp_path / "ray" / "theta.npz").is_file()
