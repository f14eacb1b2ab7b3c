"""Fig. 6 left: first-layer receptive fields as the rule trains a base model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarule import train
from metarule.experiments import common

FIGURE = "Fig. 6 left"
TITLE = "First-layer receptive fields"
CLAIM = ("Although it never sees pixel layout, the rule grows template-like first-layer features "
         "on MNIST and low-frequency, then more local features on CIFAR-10.")
PAPER = ("filters after 10k inner steps, at several points of meta-training (ours: at several "
         "points of inner training with one θ); MNIST and CIFAR-10 (we use patches16)")
USES_RULE = True


@dataclass(frozen=True)
class Size:
    datasets: tuple[str, ...]
    snapshots: tuple[int, ...]       # inner steps at which the filters are taken
    n_filters: int
    n_train: int | None = None
    widths: tuple[int, ...] = (128, 128, 128, 128)


SIZES = {
    "tiny": Size(("mnist14",), (0, 2, 4), 4, 500, (16, 16)),
    "default": Size(("mnist14", "patches16"), (0, 100, 300, 1000), 16),
    "full": Size(("mnist14", "patches16"), (0, 300, 1000, 3000, 10_000), 32),
}


def smoothness(filters: np.ndarray, image_shape) -> float:
    """Mean squared difference of neighbouring pixels over twice the pixel variance: about 1 for
    white noise, near 0 for smooth, local features."""
    h, w, c = image_shape
    f = filters.T.reshape(-1, h, w, c)
    f = f - f.mean(axis=(1, 2, 3), keepdims=True)
    diffs = np.concatenate([np.diff(f, axis=1).reshape(len(f), -1),
                            np.diff(f, axis=2).reshape(len(f), -1)], axis=1)
    return float(np.mean(diffs ** 2) / (2 * np.mean(f ** 2) + 1e-12))


def pixel_filters(params, n: int) -> np.ndarray:
    """(D, n) first-layer weights in pixel order (undoing the model's input permutation)."""
    w = np.asarray(params.layers[0].w[:, :n])
    if params.perm is None:
        return w
    out = np.empty_like(w)
    out[np.asarray(params.perm)] = w
    return out


def run(size: Size, ctx: common.Context) -> dict:
    out = {}
    for name in size.datasets:
        ds = common.load(name, size.n_train, 100)  # the test split is unused
        snaps = []

        def callback(step, params):
            if step in size.snapshots:
                f = pixel_filters(params, size.n_filters)
                first = snaps[0]["raw"] if snaps else f
                cos = np.sum(f * first, 0) / (np.linalg.norm(f, axis=0)
                                              * np.linalg.norm(first, axis=0) + 1e-12)
                snaps.append({"step": step, "raw": f, "rms": float(np.sqrt(np.mean(f ** 2))),
                              "cosine_to_init": float(np.mean(cos)),
                              "smoothness": smoothness(f, ds.image_shape)})

        train.train_base_model(ctx.rule, ds.x_train, max(size.snapshots), size.widths,
                               chunk=common.eval_chunk(size.snapshots), progress=ctx.progress,
                               callback=callback)
        for s in snaps:  # each filter scaled to max |w| = 1 and rounded: enough to draw
            f = s.pop("raw")
            s["filters"] = np.round(f / (np.abs(f).max(0) + 1e-12), 3).T.tolist()
        out[name] = {"image_shape": list(ds.image_shape), "snapshots": snaps}
    return {"datasets": out}


def plot(result: dict, path) -> None:
    sets = result["datasets"]
    rows = [(name, s) for name, v in sets.items() for s in v["snapshots"]]
    n = len(rows[0][1]["filters"])
    fig, axes = common.figure(len(rows), n, figsize=(0.7 * n + 1, 0.75 * len(rows) + 0.5),
                              squeeze=False)
    for r, (name, snap) in enumerate(rows):
        h, w, c = sets[name]["image_shape"]
        for j, f in enumerate(snap["filters"]):
            img = np.asarray(f).reshape(h, w, c)
            ax = axes[r, j]
            if c == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=-1, vmax=1)
            else:
                ax.imshow((img + 1) / 2)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{name}\n{snap['step']}", fontsize=6, rotation=0, ha="right",
                              va="center")
    fig.suptitle("first-layer filters by inner step", fontsize=9)
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    lines = ["| dataset | inner step | weight RMS | cosine to init | smoothness (1 = noise) |",
             "|---|---:|---:|---:|---:|"]
    for name, v in result["datasets"].items():
        for s in v["snapshots"]:
            lines.append(f"| {name} | {s['step']} | {s['rms']:.4f} | {s['cosine_to_init']:.2f} "
                         f"| {s['smoothness']:.2f} |")
    return lines


def reading(result: dict) -> str:
    parts = [f"{v['snapshots'][0]['smoothness']:.2f} → {v['snapshots'][-1]['smoothness']:.2f} "
             f"on {name} (cosine to init {v['snapshots'][-1]['cosine_to_init']:.2f} at step "
             f"{v['snapshots'][-1]['step']})" for name, v in result["datasets"].items()]
    return ("Filter smoothness goes " + "; ".join(parts) + ". Smoothness is 1 for white noise "
            "and falls as filters grow smooth and structured; whether they look like templates "
            "(MNIST) or local features (patches) is for the figure to show: the numbers alone "
            "do not decide the claim.")
