"""Named rules: initial theta that are classic local learning rules (Oja, Sanger, Foldiak), the
paper's random start, saving and loading theta, and the rules shipped with the package.

Each classic rule is a setting of the merge weights over the weight-update planes of rule.PLANES;
the conv nets keep their random initialisation but are switched off by zero merge weights. With
W <- W (1 - lr) - lr * Delta (App.5), a Hebbian increase of W is a *negative* merge weight.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from metarule import rule
from metarule.config import RuleConfig, preset as get_preset

# Merge weights are averaged over the planes (App.60), so a plane's weight is scaled by their
# number: a named rule's merged update then has the soft normalisation's natural O(1) size.
_SCALE = float(len(rule.PLANES))

INITIAL_RULES: dict[str, dict[str, float]] = {
    # Oja's subspace rule: dW = C_xy - W C_yy.
    "oja": {"hebbian": -1.0, "oja": 1.0},
    # Oja's rule plus a small weight on every learned plane, so that meta-gradients reach the
    # readouts from the first step (the best start of an early prototype of this project).
    "oja-learned": {"hebbian": -1.0, "oja": 1.0, "zero": 0.1, "rbf": 0.1, "first": 0.1,
                    "lin_lower_symm": 0.1, "sqr_lower_symm": 0.1, "lin_upper_symm": 0.1,
                    "sqr_upper_symm": 0.1},
    # Sanger's generalised Hebbian algorithm: dW = C_xy - W triu(C_yy).
    "sanger": {"hebbian": -1.0, "sanger": 1.0},
    # Hebbian feed-forward learning with anti-Hebbian lateral decorrelation (Foldiak 1990).
    "hebbian-decorrelation": {"hebbian": -1.0, "lateral": 1.0},
}
# The start of `meta-train`: at equal compute it lowered the held-out meta-objective and raised
# held-out accuracy the most of the named starts (docs/starts.md).
DEFAULT_INIT = "sanger"


class RuleError(ValueError):
    """A rule name or file that cannot be used."""


class Rule(NamedTuple):
    theta: rule.Theta
    cfg: RuleConfig
    name: str
    card: dict


def init_rule(name: str, preset: str | RuleConfig = "cpu", key: jax.Array | None = None):
    """theta of a named starting rule: "random" (the paper's initialisation) or a classic rule
    in INITIAL_RULES."""
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    key = jax.random.PRNGKey(0) if key is None else key
    theta = rule.init_theta(key, cfg)
    if name == "random":
        return theta
    if name not in INITIAL_RULES:
        raise RuleError(f"unknown initial rule {name!r}; choose one of "
                        f"random, {', '.join(INITIAL_RULES)}")
    merge = np.zeros(len(rule.PLANES), np.float32)
    for plane, weight in INITIAL_RULES[name].items():
        merge[rule.PLANES.index(plane)] = _SCALE * weight
    # No bias drift and no learned error signal: the classic rules have neither.
    return dict(theta, merge=jnp.asarray(merge), bias_readout=jnp.zeros_like(theta["bias_readout"]))


def start_theta(spec: str, cfg: RuleConfig, key: jax.Array) -> rule.Theta:
    """theta that meta-training starts from: a named initial rule, or a meta-trained rule
    (shipped name or .npz path) to fine-tune, which must have been trained with `cfg`."""
    if spec == "random" or spec in INITIAL_RULES:
        return init_rule(spec, cfg, key)
    start = load_rule(spec, seed=0)
    if start.cfg != cfg:
        raise RuleError(f"rule {spec!r} was meta-trained with another rule config than this "
                        f"run's preset; meta-train with the preset it was trained with")
    return start.theta


def save_rule(path: str | os.PathLike, theta: rule.Theta, cfg: RuleConfig, card: dict) -> None:
    """Write theta, its config and a card to one .npz, atomically."""
    flat, _ = ravel_pytree(theta)
    meta = {"cfg": cfg.__dict__, "card": card, "planes": list(rule.PLANES)}
    buf = io.BytesIO()
    np.savez(buf, theta=np.asarray(flat), meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_rule_file(path: str | os.PathLike) -> Rule:
    redo = "pass a .npz written by metarule (meta-train's theta.npz or a shipped rule)"
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            flat = z["theta"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        what = "an empty file" if isinstance(e, EOFError) else str(e) or type(e).__name__
        raise RuleError(f"cannot read rule file {path} ({what}); {redo}") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("cfg"), dict)
            and isinstance(meta.get("card", {}), dict)):
        raise RuleError(f"rule file {path} has no rule config in its metadata; {redo}")
    if meta.get("planes") != list(rule.PLANES):
        raise RuleError(f"rule file {path} was written for other weight-update planes; "
                        f"re-export it with this version of metarule")
    try:
        cfg = RuleConfig(**meta["cfg"])
    except (TypeError, ValueError) as e:
        raise RuleError(f"rule file {path} has an invalid rule config ({e}); {redo}") from None
    template, unravel = ravel_pytree(rule.init_theta(jax.random.PRNGKey(0), cfg))
    if flat.size != template.size:
        raise RuleError(f"rule file {path} has {flat.size} parameters, its config expects more "
                        f"or fewer; the file is corrupt")
    if not np.all(np.isfinite(flat)):
        raise RuleError(f"rule file {path} holds NaN or inf parameters; use an earlier checkpoint")
    card = meta.get("card", {})
    return Rule(unravel(jnp.asarray(flat)), cfg, card.get("name", Path(path).stem), card)


def shipped_rules() -> list[str]:
    folder = resources.files("metarule") / "rules"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".npz")) \
        if folder.is_dir() else []


DEFAULT_RULE = "cpu-pes-v1"  # the shipped rule that beat the others on validation rows


def default_rule_spec() -> str:
    """DEFAULT_RULE if shipped, else the first shipped rule, else the paper's untrained
    initialisation."""
    shipped = shipped_rules()
    if DEFAULT_RULE in shipped:
        return DEFAULT_RULE
    return shipped[0] if shipped else "untrained"


def load_rule(spec: str, preset: str = "cpu", seed: int = 0) -> Rule:
    """A rule from a spec: "untrained" (the paper's random theta), "init:NAME", a shipped rule's
    name, or a path to a rule .npz."""
    if spec == "untrained":
        spec = "init:random"
    if spec.startswith("init:"):
        name = spec[5:]
        theta = init_rule(name, preset, jax.random.PRNGKey(seed))
        return Rule(theta, get_preset(preset), spec, {"name": spec, "meta_trained": False})
    if spec in shipped_rules():
        return read_rule_file(resources.files("metarule") / "rules" / f"{spec}.npz")
    if Path(spec).exists():
        return read_rule_file(spec)
    raise RuleError(f"unknown rule {spec!r}; use 'untrained', 'init:NAME' "
                    f"(random, {', '.join(INITIAL_RULES)}), a shipped rule "
                    f"({', '.join(shipped_rules()) or 'none yet'}) or a path to a .npz")
