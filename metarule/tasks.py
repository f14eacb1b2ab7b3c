"""The meta-training task distribution of Section 4.2 and App. H.1.1.

A task is a dataset, a subset of its classes, a base-model architecture and a fixed set of
input transforms. Every task permutes the input dimensions (so the rule cannot memorise pixel
identity); some tasks also rotate and shift the images and add the rotation and shift as
regression targets next to the one-hot class, and some add the "domain transfer" transforms
of H.1.1 (task / example dropout masks, per-class permutations, per-image x-shifts).
Everything here is numpy: batches are made on the host and handed to JAX.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np

from metarule import data
from metarule.config import ConfigError

AUG_TARGETS = ("sin_rotation", "cos_rotation", "shift_x", "shift_y")

# The three 10-way glyph problems of H.1.1, as predicates on the class's character.
NAMED_SUBSETS = {
    "letters": lambda ch: ch.isascii() and ch.isalpha(),
    "math": lambda ch: unicodedata.category(ch) == "Sm",
    "currency": lambda ch: unicodedata.category(ch) == "Sc",
}


@dataclass(frozen=True)
class TaskConfig:
    """How tasks are drawn. Defaults follow App. H.1.1; probabilities the paper leaves open
    are ours.

    Widths are drawn once per task and shared by all its layers, so JAX compiles at most
    len(depths) * len(widths) base-model shapes per input size.
    """
    datasets: tuple[str, ...] = ("glyphs14", "patches16", "stamps16")
    dataset_weights: tuple[float, ...] = (0.5, 0.25, 0.25)   # half the tasks are glyphs
    ways: tuple[int, ...] = (10, 13, 14, 17, 20, 30)          # glyphs and unlisted datasets
    dataset_ways: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("stamps16", (10, 15, 20, 25)), ("stamps16_heldout", (10,)),
        ("patches16", (10,)), ("patches16_color", (10,)))   # CIFAR-10 stand-in: 10-way
    named_subsets: tuple[str, ...] = ("letters", "math", "currency")
    p_named_subset: float = 1 / 3      # of glyph tasks; named subsets are always augmented
    named_ways: int = 10
    p_augment: float = 0.5             # rotation + shift with regression targets
    max_rotation: float = 360.0        # degrees
    max_shift: float = 5.0             # pixels, in x and y; also bounds the per-image x-shift
    p_task_dropout: float = 0.2
    p_example_dropout: float = 0.2
    max_dropout: float = 0.5           # dropout rates are uniform in [0, max_dropout]
    p_class_perm: float = 0.1
    n_class_perms: int = 4             # fixed pool of input permutations per class
    p_xshift: float = 0.2
    depths: tuple[int, ...] = (2, 3, 4, 5)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    inner_batch: int = 128
    k_per_class: int = 10              # support and query each

    def __post_init__(self):
        if not self.datasets or len(self.dataset_weights) != len(self.datasets):
            raise ConfigError(f"need one weight per dataset, got {len(self.datasets)} datasets "
                              f"and {len(self.dataset_weights)} weights")
        if min(self.dataset_weights) < 0 or sum(self.dataset_weights) <= 0:
            raise ConfigError(f"dataset_weights must be >= 0 with a positive sum, got "
                              f"{self.dataset_weights}")
        all_ways = (*self.ways, self.named_ways, *(w for _, ws in self.dataset_ways for w in ws))
        if not self.ways or min(all_ways) < 2:
            raise ConfigError(f"every task needs at least 2 ways, got {all_ways}")
        for name in ("p_named_subset", "p_augment", "p_task_dropout", "p_example_dropout",
                     "p_class_perm", "p_xshift", "max_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        unknown = set(self.named_subsets) - set(NAMED_SUBSETS)
        if unknown:
            raise ConfigError(f"unknown named subsets {sorted(unknown)}; choose from "
                              f"{', '.join(NAMED_SUBSETS)}")
        if (not self.depths or not self.widths or min(self.depths) < 1 or min(self.widths) < 1
                or self.inner_batch < 2 or self.k_per_class < 1 or self.n_class_perms < 1):
            raise ConfigError("depths, widths, n_class_perms and k_per_class must be >= 1 and "
                              "inner_batch >= 2")

    def ways_for(self, dataset: str) -> tuple[int, ...]:
        return dict(self.dataset_ways).get(dataset, self.ways)


@dataclass(frozen=True, eq=False)
class Task:
    """One sampled task. Transforms are fixed at sampling; batches draw fresh randomness."""
    dataset: str
    classes: np.ndarray               # dataset class ids; column i of the one-hot is classes[i]
    input_dim: int
    n_targets: int                    # ways one-hot columns + len(AUG_TARGETS)
    hidden: tuple[int, ...]           # base-model widths (the 32-unit embedding excluded)
    augmented: bool                   # rotation/shift applied and used as targets
    subset: str | None                # named glyph subset, or None
    image_shape: tuple[int, int, int] | None
    max_rotation: float
    max_shift: float
    inner_batch: int
    perm: np.ndarray = field(repr=False)                 # (D,) input permutation
    task_mask: np.ndarray | None = field(repr=False)     # (D,) float32 0/1, or None
    example_dropout: float = 0.0                          # per-example dropout rate
    class_perms: np.ndarray | None = field(default=None, repr=False)  # (ways, n, D)
    xshift: bool = False                                  # per-image random x-shift
    # Only the training split: meta-training never reads a test split.
    _x: np.ndarray | None = field(default=None, repr=False)  # (N, D) training split
    _rows: list = field(default_factory=list, repr=False)    # per-class row ids into _x

    @property
    def ways(self) -> int:
        return len(self.classes)

    def unlabeled_batches(self, rng: np.random.Generator, n_batches: int) -> np.ndarray:
        """(n_batches, inner_batch, D) float32 from the train split; labels are never used."""
        rows = np.concatenate(self._rows)
        pos = np.repeat(np.arange(self.ways), [len(r) for r in self._rows])
        pick = rng.integers(0, len(rows), n_batches * self.inner_batch)
        x, _ = self._transform(rng, self._x, rows[pick], pos[pick])
        return x.reshape(n_batches, self.inner_batch, self.input_dim)

    def labeled(self, rng: np.random.Generator, k_per_class: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """Class-balanced x (ways*k, D) and targets y (ways*k, n_targets), both float32.

        y is the one-hot class followed by AUG_TARGETS (sin and cos of the rotation, shift_x
        and shift_y over max_shift), all zero when the task is not augmented. Rows go round-
        robin over the classes, so any prefix of m*ways rows is balanced too: split
        labeled(rng, 2k) in half for disjoint support and query sets. Examples are drawn
        without replacement unless a class has fewer than k.
        """
        picks = [rng.choice(r, k_per_class, replace=len(r) < k_per_class)
                 for r in self._rows]
        rows = np.stack(picks, axis=1).ravel()                     # (k, ways) -> round robin
        pos = np.tile(np.arange(self.ways), k_per_class)
        x, aug = self._transform(rng, self._x, rows, pos)
        onehot = np.eye(self.ways, dtype=np.float32)[pos]
        return x, np.concatenate([onehot, aug], axis=1)

    def _transform(self, rng, x_all, rows, pos) -> tuple[np.ndarray, np.ndarray]:
        """Apply the task's transforms to x_all[rows]; return (x, augmentation targets)."""
        x = np.array(x_all[rows], np.float32)
        n = len(rows)
        aug = np.zeros((n, len(AUG_TARGETS)), np.float32)
        if self.augmented or self.xshift:
            angle = rng.uniform(0, self.max_rotation, n) if self.augmented else np.zeros(n)
            shift = (rng.uniform(-self.max_shift, self.max_shift, (n, 2)) if self.augmented
                     else np.zeros((n, 2)))
            extra = np.zeros((n, 2))
            if self.xshift:   # a nuisance, deliberately not a target
                extra[:, 0] = rng.integers(-int(self.max_shift), int(self.max_shift) + 1, n)
            x = affine(x.reshape(n, *self.image_shape), angle, shift + extra).reshape(n, -1)
            if self.augmented:
                rad = np.radians(angle)
                aug = np.stack([np.sin(rad), np.cos(rad), *(shift / self.max_shift).T],
                               axis=1).astype(np.float32)
        if self.class_perms is not None:
            which = rng.integers(0, self.class_perms.shape[1], n)
            x = np.take_along_axis(x, self.class_perms[pos, which], axis=1)
        if self.task_mask is not None:
            x *= self.task_mask
        if self.example_dropout > 0:
            x *= rng.random(x.shape, dtype=np.float32) >= self.example_dropout
        return x[:, self.perm], aug


def affine(images: np.ndarray, angle_deg: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Rotate each image counter-clockwise about its centre, then shift it; bilinear, zero fill.

    Args:
      images: (B, H, W, C).
      angle_deg: (B,) degrees; 90 equals np.rot90 on a square image.
      shift: (B, 2) pixels (dx right, dy down).
    """
    b, h, w, c = images.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rad = np.radians(np.asarray(angle_deg, np.float32))[:, None, None]
    cos, sin = np.cos(rad), np.sin(rad)
    qx = xx - (w - 1) / 2 - shift[:, 0, None, None].astype(np.float32)
    qy = yy - (h - 1) / 2 - shift[:, 1, None, None].astype(np.float32)
    # Inverse map: where in the source each output pixel comes from (y axis points down).
    # Clamping to [-1, size] keeps every tap inside a zero border without changing the result.
    sx = np.clip(cos * qx - sin * qy + (w - 1) / 2, -1, w)
    sy = np.clip(sin * qx + cos * qy + (h - 1) / 2, -1, h)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    # Channels go into the batch so each tap is a flat 1-D gather (the fast path in numpy).
    hp, wp = h + 3, w + 3                                  # border: 1 before, 2 after
    padded = np.pad(images.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (1, 2), (1, 2))).ravel()
    plane = (np.arange(b)[:, None] * c + np.arange(c)) * (hp * wp)      # (B, C)
    idx = ((y0 + 1) * wp + (x0 + 1)).astype(np.int64)[:, None] + plane[..., None, None]
    fx, fy = fx[:, None], fy[:, None]
    out = (padded[idx] * ((1 - fx) * (1 - fy)) + padded[idx + 1] * (fx * (1 - fy))
           + padded[idx + wp] * ((1 - fx) * fy) + padded[idx + wp + 1] * (fx * fy))
    return out.transpose(0, 2, 3, 1)        # (B, C, H, W) -> (B, H, W, C)


class TaskSampler:
    """Draws tasks from TaskConfig; the sequence of tasks is a pure function of the seed.

    Build one sampler per worker process (with its own seed) rather than sending tasks between
    processes: datasets are memory-mapped, so a sampler is cheap, but a pickled Task carries a
    full copy of its dataset.
    """

    def __init__(self, cfg: TaskConfig, seed: int):
        self.cfg = cfg
        self._rng = np.random.default_rng(seed)
        self._data = {name: data.load(name) for name in cfg.datasets}
        self._rows = {name: _rows_by_class(ds.y_train, ds.num_classes)
                      for name, ds in self._data.items()}
        self._subsets = {name: {s: np.flatnonzero([NAMED_SUBSETS[s](c) for c in ds.class_names])
                                for s in cfg.named_subsets}
                         for name, ds in self._data.items() if name.startswith("glyphs")}
        for name, subs in self._subsets.items():
            for s, ids in subs.items():
                if len(ids) < cfg.named_ways:
                    raise data.DataError(f"{name} has only {len(ids)} {s!r} classes, fewer "
                                         f"than named_ways={cfg.named_ways}; lower named_ways")
        weights = np.asarray(cfg.dataset_weights, np.float64)
        self._weights = weights / weights.sum()

    def sample(self, rng: np.random.Generator | None = None, dataset: str | None = None) -> Task:
        """The next task; with `rng`, a task drawn from that generator instead of the sampler's
        own (so a task can be re-drawn from a stored seed), and with `dataset`, one of that
        dataset (so tasks that share a shape can be batched)."""
        cfg, rng = self.cfg, self._rng if rng is None else rng
        name = cfg.datasets[rng.choice(len(cfg.datasets), p=self._weights)]
        if dataset is not None:
            if dataset not in self._data:
                raise data.DataError(f"dataset {dataset!r} is not among this sampler's "
                                     f"{', '.join(cfg.datasets)}; add it to TaskConfig.datasets")
            name = dataset
        ds = self._data[name]
        image = ds.image_shape is not None
        subset = None
        if name in self._subsets and cfg.named_subsets and rng.random() < cfg.p_named_subset:
            subset = cfg.named_subsets[rng.integers(len(cfg.named_subsets))]
            pool, ways, augmented = self._subsets[name][subset], cfg.named_ways, True
        else:
            pool = np.arange(ds.num_classes)
            ways = min(int(rng.choice(cfg.ways_for(name))), ds.num_classes)
            augmented = image and rng.random() < cfg.p_augment
        classes = rng.choice(pool, ways, replace=False)
        d = ds.input_dim
        perm = rng.permutation(d)
        task_mask = None
        if rng.random() < cfg.p_task_dropout:
            task_mask = (rng.random(d) >= rng.uniform(0, cfg.max_dropout)).astype(np.float32)
        example_dropout = (rng.uniform(0, cfg.max_dropout)
                           if rng.random() < cfg.p_example_dropout else 0.0)
        class_perms = None
        if rng.random() < cfg.p_class_perm:
            flat = np.tile(np.arange(d), (ways * cfg.n_class_perms, 1))
            class_perms = rng.permuted(flat, axis=1).reshape(ways, cfg.n_class_perms, d)
        xshift = image and rng.random() < cfg.p_xshift
        hidden = (int(rng.choice(cfg.widths)),) * int(rng.choice(cfg.depths))
        rows = [self._rows[name][c] for c in classes]
        return Task(dataset=name, classes=classes, input_dim=d,
                    n_targets=ways + len(AUG_TARGETS), hidden=hidden, augmented=augmented,
                    subset=subset, image_shape=ds.image_shape, max_rotation=cfg.max_rotation,
                    max_shift=cfg.max_shift, inner_batch=cfg.inner_batch, perm=perm,
                    task_mask=task_mask, example_dropout=example_dropout,
                    class_perms=class_perms, xshift=xshift,
                    _x=ds.x_train, _rows=rows)


def _rows_by_class(y: np.ndarray, num_classes: int) -> list[np.ndarray]:
    y = np.asarray(y)
    order = np.argsort(y, kind="stable")
    return np.split(order, np.cumsum(np.bincount(y, minlength=num_classes))[:-1])
