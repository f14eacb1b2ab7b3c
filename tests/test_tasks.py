"""The task sampler on the real meta-training datasets (glyphs14, patches16, stamps16)."""
import dataclasses
import itertools

import numpy as np
import pytest

from metarule import data, tasks
from metarule.config import ConfigError
from metarule.tasks import AUG_TARGETS, Task, TaskConfig, TaskSampler


@pytest.fixture(scope="module")
def sampler():
    return TaskSampler(TaskConfig(), seed=0)


@pytest.fixture(scope="module")
def drawn(sampler):
    return [sampler.sample() for _ in range(60)]


def plain(task: Task, **changes) -> Task:
    """The task with every random transform off and the identity input permutation."""
    off = dict(perm=np.arange(task.input_dim), task_mask=None, example_dropout=0.0,
               class_perms=None, xshift=False, augmented=False)
    return dataclasses.replace(task, **{**off, **changes})


def summary(t: Task):
    return (t.dataset, t.classes.tolist(), t.hidden, t.augmented, t.subset, t.perm.tolist(),
            None if t.task_mask is None else t.task_mask.tolist(), t.example_dropout, t.xshift,
            None if t.class_perms is None else t.class_perms.tolist())


def test_same_seed_same_tasks_and_batches(drawn):
    again = TaskSampler(TaskConfig(), seed=0)
    for t, u in zip(drawn[:8], (again.sample() for _ in range(8))):
        assert summary(t) == summary(u)
        np.testing.assert_array_equal(t.unlabeled_batches(np.random.default_rng(1), 2),
                                      u.unlabeled_batches(np.random.default_rng(1), 2))
        for a, b in zip(t.labeled(np.random.default_rng(2), 3),
                        u.labeled(np.random.default_rng(2), 3)):
            np.testing.assert_array_equal(a, b)
    other = TaskSampler(TaskConfig(), seed=1)
    assert [summary(t) for t in drawn[:4]] != [summary(other.sample()) for _ in range(4)]


def test_distribution_covers_the_paper(drawn):
    cfg = TaskConfig()
    assert {t.dataset for t in drawn} == set(cfg.datasets)
    assert {t.subset for t in drawn} >= {None, "letters", "math", "currency"}
    for t in drawn:
        assert len(set(t.hidden)) == 1 and t.hidden[0] in cfg.widths
        assert len(t.hidden) in cfg.depths
        assert t.n_targets == t.ways + len(AUG_TARGETS)
        assert len(set(t.classes.tolist())) == t.ways
        assert sorted(t.perm.tolist()) == list(range(t.input_dim))
        if t.subset:
            assert t.ways == 10 and t.augmented and t.dataset == "glyphs14"
        elif t.dataset == "glyphs14":
            assert t.ways in cfg.ways
        else:
            assert t.ways in cfg.ways_for(t.dataset)
    assert any(t.augmented for t in drawn) and not all(t.augmented for t in drawn)


def test_named_subsets_hold_the_right_characters(drawn):
    names = data.load("glyphs14").class_names
    for t in drawn:
        if t.subset:
            chars = [names[c] for c in t.classes]
            assert all(tasks.NAMED_SUBSETS[t.subset](ch) for ch in chars), (t.subset, chars)


def test_batch_shapes(drawn):
    rng = np.random.default_rng(0)
    for t in drawn[:10]:
        u = t.unlabeled_batches(rng, 3)
        assert u.shape == (3, 128, t.input_dim) and u.dtype == np.float32
        assert np.isfinite(u).all()
        x, y = t.labeled(rng, 10)
        assert x.shape == (10 * t.ways, t.input_dim) and x.dtype == np.float32
        assert y.shape == (10 * t.ways, t.n_targets) and y.dtype == np.float32


def test_labeled_is_class_balanced_in_every_prefix(drawn):
    t = drawn[0]
    x, y = t.labeled(np.random.default_rng(0), 8)
    onehot = y[:, :t.ways]
    assert (onehot.sum(1) == 1).all()
    for m in (1, 4, 8):
        np.testing.assert_array_equal(onehot[:m * t.ways].sum(0), m)
    if not t.augmented:
        assert (y[:, t.ways:] == 0).all()


def test_labeled_draws_distinct_examples_of_the_right_class(drawn):
    t = plain(drawn[0])
    x, y = t.labeled(np.random.default_rng(0), 10)
    assert len({row.tobytes() for row in x}) == len(x)   # without replacement
    ds = data.load(t.dataset)
    for row, target in zip(x[:5], y[:5]):
        cls = t.classes[np.argmax(target)]
        matches = np.flatnonzero((np.asarray(ds.x_train) == row).all(1))
        assert cls in ds.y_train[matches]


def test_unlabeled_rows_come_from_the_task_classes_train_split(drawn):
    t = plain(drawn[1])
    rows = np.concatenate(t._rows)
    allowed = {r.tobytes() for r in np.asarray(t._x[np.sort(rows)])}
    batch = t.unlabeled_batches(np.random.default_rng(0), 2).reshape(-1, t.input_dim)
    assert all(r.tobytes() in allowed for r in batch)


def test_permutation_is_fixed_per_task(drawn):
    t = drawn[2]
    base = plain(t)
    x0, _ = base.labeled(np.random.default_rng(5), 2)
    x1, _ = plain(t, perm=t.perm).labeled(np.random.default_rng(5), 2)
    np.testing.assert_array_equal(x1, x0[:, t.perm])


def single_example_task(task: Task, **changes) -> Task:
    """Each class reduced to its first training row, so we know which image was used."""
    return plain(task, _rows=[r[:1] for r in task._rows], **changes)


def test_augmentation_targets_equal_the_transform_applied(drawn):
    t = next(t for t in drawn if t.image_shape is not None)
    t = single_example_task(t, augmented=True)
    x, y = t.labeled(np.random.default_rng(3), 4)
    angle = np.degrees(np.arctan2(y[:, t.ways], y[:, t.ways + 1])) % 360
    shift = y[:, t.ways + 2:] * t.max_shift
    assert np.abs(shift).max() <= t.max_shift and np.ptp(angle) > 1
    np.testing.assert_allclose(np.hypot(y[:, t.ways], y[:, t.ways + 1]), 1, atol=1e-5)
    rows = np.stack(t._rows).ravel()[np.argmax(y[:, :t.ways], 1)]
    originals = np.asarray(t._x[rows])
    expected = tasks.affine(originals.reshape(len(x), *t.image_shape), angle, shift)
    np.testing.assert_allclose(x, expected.reshape(len(x), -1), atol=1e-4)


def test_affine_matches_exact_transforms():
    img = np.random.default_rng(0).random((1, 14, 14, 3)).astype(np.float32)
    for k in (1, 2, 3):
        np.testing.assert_allclose(tasks.affine(img, np.array([90.0 * k]), np.zeros((1, 2)))[0],
                                   np.rot90(img[0], k), atol=1e-5)
    shifted = tasks.affine(img, np.zeros(1), np.array([[3.0, -2.0]]))[0]
    expected = np.zeros_like(img[0])
    expected[:-2, 3:] = img[0, 2:, :-3]
    np.testing.assert_allclose(shifted, expected, atol=1e-6)


def test_rotating_a_glyph_rotates_it(drawn):
    """An 'L' turned by 180 degrees has its ink at the top right instead of bottom left."""
    ds = data.load("glyphs14")
    img = np.asarray(ds.x_train[np.flatnonzero(ds.y_train == ds.class_names.index("L"))[0]])
    turned = tasks.affine(img.reshape(1, 14, 14, 1), np.array([180.0]), np.zeros((1, 2)))[0, ..., 0]
    np.testing.assert_allclose(turned, img.reshape(14, 14)[::-1, ::-1], atol=1e-5)


def test_dropout_masks_and_class_permutations(drawn):
    t = drawn[0]
    d = t.input_dim
    mask = np.ones(d, np.float32)
    mask[: d // 2] = 0
    masked = plain(t, task_mask=mask)
    u = masked.unlabeled_batches(np.random.default_rng(0), 2)
    assert (u[..., : d // 2] == 0).all()                      # fixed across all images
    dropped = plain(t, example_dropout=0.5).unlabeled_batches(np.random.default_rng(0), 1)
    kept = plain(t).unlabeled_batches(np.random.default_rng(0), 1)
    assert (dropped == 0).mean() > (kept == 0).mean() + 0.2
    perms = np.stack([np.stack([np.roll(np.arange(d), c + 1)] * 2) for c in range(t.ways)])
    single = single_example_task(t)
    x, y = dataclasses.replace(single, class_perms=perms).labeled(np.random.default_rng(0), 1)
    x0, _ = single.labeled(np.random.default_rng(0), 1)
    for i, c in enumerate(np.argmax(y[:, :t.ways], 1)):
        np.testing.assert_array_equal(x[i], x0[i][perms[c, 0]])


def test_sampler_options_are_respected():
    cfg = TaskConfig(datasets=("patches16",), dataset_weights=(1.0,), p_augment=1.0,
                     p_task_dropout=1.0, p_example_dropout=0.0, p_class_perm=1.0,
                     p_xshift=0.0, depths=(2,), widths=(64,), inner_batch=16)
    s = TaskSampler(cfg, seed=3)
    for t in itertools.islice(iter(s.sample, None), 5):
        assert t.augmented and t.task_mask is not None and t.class_perms is not None
        assert t.class_perms.shape == (t.ways, cfg.n_class_perms, t.input_dim)
        assert t.hidden == (64, 64) and t.ways == 10
        assert t.unlabeled_batches(np.random.default_rng(0), 1).shape == (1, 16, 256)


@pytest.mark.parametrize("changes", [
    {"dataset_weights": (1.0,)},
    {"ways": (1,)},
    {"p_augment": 1.5},
    {"named_subsets": ("emoji",)},
    {"widths": ()},
])
def test_bad_config(changes):
    with pytest.raises(ConfigError):
        TaskConfig(**changes)
