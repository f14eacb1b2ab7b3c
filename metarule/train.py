"""Training a base model with a rule (the inner loop at evaluation time), saving and loading it,
and scoring a saved model by the few-shot protocol.

The rule sees unlabeled batches only: labels are never read here, except by `evaluate_model`.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm import tqdm

from metarule import base_model, catalog, data, evaluate, inner, memory
from metarule.catalog import Rule
from metarule.config import BaseModelConfig, preset as get_preset
from metarule.rule import check_inputs
from metarule.runtime import all_finite, check_stop

DEFAULT_WIDTHS = (128, 128, 128, 128)
PARAMS_FILE, RECORD_FILE = "params.npz", "record.json"


class TrainError(RuntimeError):
    """Inner training that cannot go on, e.g. the rule drove the model to NaN."""


class ModelError(ValueError):
    """A model directory that is missing or unreadable."""


class OutputError(ValueError):
    """An output folder that cannot be written, or that exists and may not be replaced."""


@contextlib.contextmanager
def atomic_dir(out: str | Path, replace: bool = False) -> Iterator[Path]:
    """A fresh temporary sibling of folder `out` to write into; renamed to `out` when the block
    ends without error, removed otherwise, so nobody ever sees a half-written `out`.

    `out` and its writability are checked on entry, before any work. Of two writers, the
    second to finish is refused (replace=False) or replaces the first's folder whole.

    Raises:
      OutputError: `out` exists and `replace` is False, or it cannot be written.
    """
    if not str(out).strip():  # Path("") would be the current folder
        raise OutputError("the output folder is empty; give a path such as runs/model")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; give a folder path for the output")
    if out.exists() and any(out.iterdir()) and not replace:
        raise OutputError(f"{out} already exists; pass --force to replace it or choose "
                          f"another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir()  # not mkdtemp: its mode 0700 would become the output's
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror}; choose a writable folder") \
            from None
    try:
        yield tmp
        _move_into_place(tmp, out, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path, replace: bool) -> None:
    try:
        os.rename(tmp, out)  # atomic; fails when out is a non-empty folder
        return
    except OSError:
        if not out.exists() or not replace:
            raise OutputError(f"{out} appeared while this command ran (another process?); "
                              f"its contents are kept; pass --force to replace it") from None
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        raise OutputError(f"another process replaced {out} while this command ran; its "
                          f"result is kept") from None
    finally:
        shutil.rmtree(old, ignore_errors=True)


def chunk_size(steps: int, chunk: int) -> int:
    """The largest divisor of `steps` that is at most `chunk`: every jitted call then unrolls the
    same number of steps, so the inner loop compiles once."""
    return next(c for c in range(min(chunk, steps), 0, -1) if steps % c == 0)


def index_chunks(n: int, batch: int, chunk: int, n_chunks: int,
                 rng: np.random.Generator) -> Iterator[np.ndarray]:
    """(chunk, batch) example indices per chunk, walking through epochs of fresh permutations:
    each example is seen once per epoch, and a batch larger than the data still works."""
    buf = np.empty(0, np.int64)
    need = chunk * batch
    for _ in range(n_chunks):
        while buf.size < need:
            buf = np.concatenate([buf, rng.permutation(n)])
        yield buf[:need].reshape(chunk, batch)
        buf = buf[need:]


def train_base_model(rule: Rule, x_unlabeled: np.ndarray, steps: int,
                     widths: tuple[int, ...] = DEFAULT_WIDTHS, activation: str = "relu",
                     permute: bool = False, seed: int = 0, chunk: int = 50,
                     progress: bool = True,
                     callback: Callable[[int, base_model.Params], object] | None = None
                     ) -> base_model.Params:
    """Initialise a base model and apply `rule` for `steps` unlabeled batches.

    Batches of `rule.cfg.inner_batch` examples are drawn by a numpy RNG seeded with `seed` (which
    also seeds the model's initialisation) and applied in jitted chunks of equal length
    (`chunk_size`), so the inner loop compiles once per model shape; a step count with no
    divisor near `chunk` (a prime, say) runs in short chunks, so prefer round numbers.

    Args:
      rule: the rule and its config.
      x_unlabeled: (N, D) inputs; no labels are involved.
      steps: applications of the rule.
      widths: hidden layer widths; the embedding is 32-d as in the paper.
      activation: the base model's activation (config.ACTIVATIONS).
      permute: draw a fixed random input permutation at init.
      seed: seeds the initialisation and the batch order.
      chunk: at most this many steps per jitted call.
      progress: show a tqdm bar.
      callback: `callback(step, params)` at step 0 and after every chunk, e.g. to record
        accuracy along training.
    Returns:
      The trained parameters.
    Raises:
      memory.MemoryLimitError: if the model would not fit in the memory available.
      ValueError: if x_unlabeled, the rule's theta or the model holds NaN or inf.
      TrainError: if a parameter becomes NaN or inf.
    """
    if x_unlabeled.ndim != 2 or x_unlabeled.shape[0] < 2:
        raise ValueError(f"x_unlabeled must be (N >= 2, D), got shape {x_unlabeled.shape}")
    if steps < 0 or chunk < 1:
        raise ValueError(f"need steps >= 0 and chunk >= 1, got steps={steps} chunk={chunk}")
    cfg = BaseModelConfig(input_dim=x_unlabeled.shape[1], hidden=tuple(widths), embedding=32,
                          activation=activation, permute_inputs=permute)
    memory.check_fits(cfg.widths, rule.cfg, "training this base model")
    params = base_model.init(jax.random.PRNGKey(seed), cfg)
    check_inputs(rule.theta, params, x_unlabeled)
    if callback is not None:
        callback(0, params)
    if steps == 0:
        return params
    size = chunk_size(steps, chunk)
    rng = np.random.default_rng(seed)
    batches = index_chunks(x_unlabeled.shape[0], rule.cfg.inner_batch, size, steps // size, rng)
    done = 0
    with tqdm(total=steps, disable=not progress, unit="step", leave=False,
              desc="compiling the inner loop") as bar:
        run_chunk = None
        for idx in batches:
            x = jnp.asarray(np.asarray(x_unlabeled[idx.ravel()], np.float32).reshape(
                *idx.shape, -1))
            if run_chunk is None:  # compile apart, so that rate and ETA count steps only
                run_chunk = inner.unroll.lower(rule.theta, params, x, rule.cfg,
                                               activation).compile()
                bar.set_description("inner training", refresh=False)
                bar.reset(total=steps)
            check_stop()
            params = run_chunk(rule.theta, params, x)
            done += size
            if not all_finite(params):
                raise TrainError(f"base model parameters became NaN/inf by inner step {done} "
                                 f"of {steps}; the rule {rule.name!r} diverged on this model: "
                                 f"try fewer steps, another --seed or another rule")
            bar.update(size)
            if callback is not None:
                callback(done, params)
    return params


def theta_digest(theta) -> str:
    """A short fingerprint of theta, so results name exactly which rule produced them."""
    flat, _ = ravel_pytree(theta)
    return hashlib.sha256(np.asarray(flat, np.float32).tobytes()).hexdigest()[:12]


def rule_info(rule: Rule, spec: str) -> dict:
    """What a result records about the rule that produced it."""
    return {"spec": spec, "name": rule.name, "sha256": theta_digest(rule.theta),
            "meta_trained": bool(rule.card.get("meta_trained", True)), "card": rule.card}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save_model(directory: str | Path, params: base_model.Params, record: dict) -> Path:
    """Write params.npz (every layer's w, b, v and the input permutation) and record.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for l, layer in enumerate(params.layers):
        arrays.update({f"w{l}": layer.w, f"b{l}": layer.b, f"v{l}": layer.v})
    if params.perm is not None:
        arrays["perm"] = params.perm
    np.savez(directory / PARAMS_FILE, **{k: np.asarray(v) for k, v in arrays.items()})
    (directory / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def load_model(directory: str | Path) -> tuple[base_model.Params, dict]:
    """(params, record) of a model written by `save_model`.

    Raises:
      ModelError: if the directory or its files are missing or unreadable.
    """
    directory = Path(directory)
    if not (directory / PARAMS_FILE).is_file() or not (directory / RECORD_FILE).is_file():
        raise ModelError(f"no model in {directory}: expected {PARAMS_FILE} and {RECORD_FILE} "
                         f"as written by `metarule train --out DIR`")
    try:
        record = json.loads((directory / RECORD_FILE).read_text())
        with np.load(directory / PARAMS_FILE) as z:
            n_layers = sum(1 for k in z.files if k.startswith("w"))
            layers = tuple(base_model.Layer(*(jnp.asarray(z[f"{k}{l}"]) for k in "wbv"))
                           for l in range(n_layers))
            perm = jnp.asarray(z["perm"]) if "perm" in z.files else None
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot read the model in {directory}: {e}") from None
    return base_model.Params(layers, perm), record


def train_to_dir(dataset: str, rule_spec: str, steps: int, out: str | Path,
                 widths: tuple[int, ...] = DEFAULT_WIDTHS, activation: str = "relu",
                 permute: bool = False, seed: int = 0, preset: str = "cpu",
                 progress: bool = True, force: bool = False,
                 label_column: str = "label") -> dict:
    """`metarule train`: train a base model on a dataset's unlabeled train split, save it to
    the folder `out` (atomically, see `atomic_dir`; an existing model only with `force`) and
    return its record."""
    with atomic_dir(out, replace=force) as tmp:
        ds = data.load(dataset, label_column)
        # Refused before the rule is loaded (its first XLA work); train_base_model checks again
        # with the rule's own config.
        memory.check_fits(BaseModelConfig(ds.input_dim, hidden=tuple(widths)).widths,
                          get_preset(preset), "training this base model")
        rule = catalog.load_rule(rule_spec, preset=preset, seed=seed)
        params = train_base_model(rule, ds.x_train, steps, widths=widths, activation=activation,
                                  permute=permute, seed=seed, progress=progress)
        record = {"dataset": str(dataset), "input_dim": ds.input_dim,
                  "rule": rule_info(rule, rule_spec), "steps": steps, "widths": list(widths),
                  "activation": activation, "permute": permute, "seed": seed,
                  "preset": preset, "date": now()}
        save_model(tmp, params, record)
    return record


def evaluate_model(model: str | Path, dataset: str, shots: int = 10, seeds: int = 10,
                   readout: str = "logistic", label_column: str = "label") -> dict:
    """`metarule eval`: few-shot accuracy of a saved model's embedding on a dataset.

    `model="random"` scores an untrained base model of the default architecture, a fresh
    initialisation per seed (the random-init baseline).

    Returns:
      JSON-ready dict: dataset, model, shots, seeds, readout, mean, stderr, accuracies.
    """
    ds = data.load(dataset, label_column)
    data.check_shots(ds, shots)
    if str(model) == "random":
        def fit(x, y, seed):
            cfg = BaseModelConfig(input_dim=ds.input_dim, hidden=DEFAULT_WIDTHS)
            return evaluate.model_embed_fn(base_model.init(jax.random.PRNGKey(seed), cfg))
    else:
        params, record = load_model(model)
        if params.layers[0].w.shape[0] != ds.input_dim:
            raise ModelError(f"model {model} takes {params.layers[0].w.shape[0]} inputs but "
                             f"{dataset} has {ds.input_dim} features; evaluate it on data of "
                             f"the kind it was trained on")
        embed_fn = evaluate.model_embed_fn(params, record.get("activation", "relu"))

        def fit(x, y, seed):
            return embed_fn
    result = evaluate.fitted_few_shot_accuracy(fit, ds.x_train, ds.y_train, ds.x_test,
                                               ds.y_test, shots, seeds, readout)
    return result.to_json(str(dataset), model=str(model))
