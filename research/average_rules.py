"""Average rules in parameter space (a "soup" of fine-tunes, or SWA over one run's snapshots).

Fine-tunes of one rule that moved in nearly orthogonal directions (docs/meta_training.md)
share its basin; their mean keeps what the runs agree on and averages out the rest.
A source is a rule file or a shipped name, optionally weighted as SOURCE=WEIGHT; a folder stands
for every snapshot in it, weighted equally as one source (its SWA average). Every source must
have been trained with the same rule config. The result is scored like any candidate:

    python research/average_rules.py runs/soup.npz cpu-oja-v0 runs/ft-a/snapshots runs/ft-b/snapshots
    python research/select_rule.py runs/ft-b --incumbent cpu-oja-v0 --extra runs/soup.npz
"""
import argparse
from pathlib import Path

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from metarule import catalog


def load_source(spec: str) -> tuple[np.ndarray, catalog.Rule, list[str]]:
    """(flat theta, one of its rules, the files it averages) of a rule, a file or a folder."""
    path = Path(spec)
    files = sorted(str(p) for p in path.glob("theta_*.npz")) if path.is_dir() else [spec]
    if not files:
        raise SystemExit(f"average_rules: no theta_*.npz snapshots in {spec}")
    loaded = [catalog.load_rule(f) for f in files]
    flat = np.mean([np.asarray(ravel_pytree(r.theta)[0], np.float64) for r in loaded], axis=0)
    return flat, loaded[-1], files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("sources", nargs="+", help="rule files, shipped names or snapshot "
                        "folders, each optionally =WEIGHT")
    args = parser.parse_args()
    flats, weights, cards = [], [], []
    cfg = None
    for source in args.sources:
        spec, _, weight = source.partition("=")
        flat, rule, files = load_source(spec)
        if cfg is not None and rule.cfg != cfg:
            raise SystemExit(f"average_rules: {spec} has another rule config than "
                             f"{args.sources[0]}; only rules of one preset can be averaged")
        cfg = rule.cfg
        flats.append(flat)
        weights.append(float(weight) if weight else 1.0)
        cards.append({"source": spec, "weight": weights[-1], "files": len(files),
                      "outer_steps": rule.card.get("outer_steps")})
    mean = np.average(flats, axis=0, weights=weights).astype(np.float32)
    _, unravel = ravel_pytree(rule.theta)
    card = {"name": args.out.stem, "meta_trained": True, "averaged_from": cards,
            "outer_steps": max(c["outer_steps"] or 0 for c in cards)}
    catalog.save_rule(args.out, jax.tree_util.tree_map(np.asarray, unravel(mean)), cfg, card)
    print(f"wrote {args.out}: weighted mean of {len(flats)} sources")


if __name__ == "__main__":
    main()
