"""`metarule demo`: apply a rule to held-out MNIST 14x14 without labels, score the embedding with
10 labels per class against baselines, and draw the first-layer filters and the embedding.

Writes first_layer_filters.png, embedding.png and demo.json into the output folder. At the
defaults (500 inner steps, the full 10k test split) it takes well under the 5-minute budget on 2
CPU cores, most of it compiling and running the inner loop.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from tqdm import tqdm

from metarule import baselines, catalog, data, evaluate, train
from metarule.experiments import common

DATASET = "mnist14"  # not among the meta-training datasets (tasks.py): held out from the rule
DEFAULT_STEPS = 500
DEFAULT_OUT = "demo_out"
SEEDS = 5            # labeled draws per method
N_FILTERS = 64       # first-layer units drawn
N_PLOTTED = 2000     # test points in the embedding scatter


def _row_text(row: dict) -> str:
    acc = "diverged" if row["mean"] is None else f"{common.pct(row['mean'], row['stderr'])} %"
    return f"  {row['method']:<34} {acc}"


def plot_filters(params, image_shape, title: str, path: Path, n: int = N_FILTERS) -> None:
    """A grid of the first `n` first-layer receptive fields, each scaled to max |w| = 1."""
    h, w, _ = image_shape
    f = np.asarray(params.layers[0].w)[:, :n]
    f = f / (np.abs(f).max(axis=0) + 1e-12)
    cols = int(np.ceil(np.sqrt(f.shape[1])))
    rows = int(np.ceil(f.shape[1] / cols))
    fig, axes = common.figure(rows, cols, figsize=(0.8 * cols, 0.8 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < f.shape[1]:
            ax.imshow(f[:, i].reshape(h, w), cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    common.save(fig, path)


def plot_embeddings(embeddings: dict[str, np.ndarray], labels: np.ndarray, path: Path) -> None:
    """Side by side 2-D PCA projections of embeddings of the same points, coloured by label."""
    fig, axes = common.figure(1, len(embeddings), figsize=(3.6 * len(embeddings) + 1, 3.6),
                              squeeze=False, layout="constrained")
    for ax, (title, u) in zip(axes[0], embeddings.items()):
        p = PCA(n_components=2).fit_transform(u)
        points = ax.scatter(p[:, 0], p[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes[0].tolist(), ticks=range(10), label="true label (not used)")
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=110)  # not common.save: its tight_layout fights the shared colorbar
    plt.close(fig)


def run(args, n_test: int | None = None, seeds: int = SEEDS,
        widths: tuple[int, ...] = train.DEFAULT_WIDTHS, preset: str = "cpu") -> dict:
    """Run the demo for the parsed `metarule demo` arguments; returns demo.json's content.

    The demo's three files are written into a private folder inside the output folder and moved
    into place at the end, each whole, replacing an earlier demo's; the folder's other files
    stay (`--out results` holds every experiment's results).

    Args:
      args: namespace with `rule` (spec or None: catalog.default_rule_spec()),
        `steps` (None: DEFAULT_STEPS), `out` (None: DEFAULT_OUT) and `json` (True: print
        nothing, no progress bars; the caller prints the result).
      n_test: score on a random subset of this many test images (None: the whole split).
      seeds: labeled draws per method.
      widths: hidden widths of the base model.
      preset: rule config for "untrained" / "init:NAME" specs.
    Raises:
      metarule.train.TrainError: the chosen rule drove the model to NaN/inf.
      metarule.train.OutputError: the output folder cannot be written.
    """
    out = Path(args.out or DEFAULT_OUT)
    if not str(out).strip() or (out.exists() and not out.is_dir()):
        raise train.OutputError(f"{str(out)!r} is not a folder path; give one such as demo_out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo.", dir=out))
    except OSError as e:
        raise train.OutputError(f"cannot write {out}: {e.strerror}; choose a writable folder") \
            from None
    try:
        result = _run(args, tmp, n_test, seeds, widths, preset)
        for path in tmp.iterdir():
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not getattr(args, "json", False):
        print(f"\nWrote {out / 'first_layer_filters.png'}, {out / 'embedding.png'} and "
              f"{out / 'demo.json'} in {result['elapsed_s']:.0f} s.")
    return {**result, "out": str(out)}


def _run(args, out: Path, n_test: int | None, seeds: int, widths: tuple[int, ...],
         preset: str) -> dict:
    start = time.perf_counter()
    quiet = getattr(args, "json", False)
    say = (lambda *a: None) if quiet else print
    spec = args.rule or catalog.default_rule_spec()
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    if spec == "untrained" and not catalog.shipped_rules():
        say("No meta-trained rule ships with this version of metarule yet: the demo runs the "
              "untrained rule (the random θ that meta-training starts from), so expect no gain "
              "over the baselines.")
    rule = catalog.load_rule(spec, preset=preset)
    ds = common.subset(data.load(DATASET), None, n_test)
    say(f"Applying rule {rule.name!r} to {DATASET} without labels: {steps} steps of "
          f"{rule.cfg.inner_batch} unlabeled images, base model {'x'.join(map(str, widths))}"
          f" -> 32.")
    start_params = []
    trained = train.train_base_model(rule, ds.x_train, steps, widths, progress=not quiet,
                                     callback=lambda s, p: start_params.append(p) if s == 0
                                     else None)
    initial = start_params[0]  # the random initialisation every model here starts from (seed 0)

    # Methods in table order; None marks a comparison rule that diverged, with its error.
    embed_fns = {f"rule {rule.name} ({steps} steps)": evaluate.model_embed_fn(trained)}
    errors = {}
    if spec not in ("untrained", "init:random"):
        name = f"untrained rule ({steps} steps)"
        try:
            embed_fns[name] = evaluate.model_embed_fn(train.train_base_model(
                catalog.load_rule("untrained", preset=preset), ds.x_train, steps, widths,
                progress=not quiet))
        except train.TrainError as e:
            embed_fns[name], errors[name] = None, str(e)
    embed_fns["random initialisation"] = evaluate.model_embed_fn(initial)
    embed_fns["PCA-32"] = baselines.pca(ds.x_train, 32).embed_fn
    table = []
    for name, fn in tqdm(embed_fns.items(), desc="10-shot evaluation", unit="method",
                         leave=False, disable=quiet):
        table.append({"method": name, **common.score(fn, ds, seeds)} if fn is not None else
                     {"method": name, "mean": None, "stderr": None, "accuracies": [],
                      "note": errors[name]})

    plot_filters(trained, ds.image_shape, f"first-layer filters after {steps} steps of "
                                          f"rule {rule.name}", out / "first_layer_filters.png")
    shown = slice(0, min(N_PLOTTED, len(ds.y_test)))
    plot_embeddings({"random initialisation (before)": evaluate.model_embed_fn(initial)(
                         ds.x_test[shown]),
                     f"after {steps} steps of rule {rule.name}": evaluate.model_embed_fn(
                         trained)(ds.x_test[shown])},
                    ds.y_test[shown], out / "embedding.png")

    elapsed = time.perf_counter() - start
    result = {"dataset": DATASET, "rule": train.rule_info(rule, spec), "steps": steps,
              "widths": list(widths), "shots": common.SHOTS, "seeds": seeds,
              "readout": "logistic", "n_test": int(len(ds.y_test)), "table": table,
              "elapsed_s": round(elapsed, 1), "date": train.now()}
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    say(f"\n{common.SHOTS}-shot accuracy on {len(ds.y_test)} {DATASET} test images "
        f"(logistic readout, {seeds} draws of labeled examples, mean ± s.e.):")
    for row in table:
        say(_row_text(row))
    return result
