"""Low-dimensional coordinates z of theta for evolution strategies: named groups that move
theta from a fixed start theta0, each scaled to its part of theta.

The rule is chaotic in theta (a 1e-8 change grows e-fold every ~12 inner steps), so a search over
all ~8k coordinates spreads a small signal thin; a few structured directions can be resolved by
a few antithetic pairs (docs/meta_training.md). Every coordinate is relative: z = 0.1 moves its
group by a tenth of that group's scale, so one sigma suits every group.

Groups:
  merge           the merge weight of each plane (App.60), additive in units of their RMS.
  gains           a log-gain per learned module: topD's convolutions, computeH's convolutions,
                  the low-rank readouts (App.42); theta_module * exp(z).
  readout_scales  log-gains of the error-signal readout (App.33) and of the bias readout (App.63).
  all             every coordinate of theta, additive in units of its array's RMS; alone only.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from metarule.config import ConfigError

Theta = dict
MODULE_GAINS = (("top_d",), ("compute_h",), ("readout_a", "readout_b"))
READOUT_SCALES = (("error_w", "error_b"), ("bias_readout",))
GROUPS = ("merge", "gains", "readout_scales", "all")


class Subspace(NamedTuple):
    names: tuple[str, ...]
    dim: int
    to_theta: Callable[[jax.Array], Theta]   # z (dim,) -> theta; z = 0 gives theta0


def _rms(a) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(a)))


def _log_gains(keys_per_coord):
    def apply(theta, z):
        theta = dict(theta)
        for keys, zi in zip(keys_per_coord, z):
            for k in keys:
                theta[k] = jax.tree_util.tree_map(lambda a: a * jnp.exp(zi), theta[k])
        return theta
    return len(keys_per_coord), apply


def _merge(theta0):
    scale = jnp.maximum(_rms(theta0["merge"]), 1e-3)

    def apply(theta, z):
        return {**theta, "merge": theta["merge"] + scale * z}
    return theta0["merge"].size, apply


def _all(theta0):
    flat, unravel = ravel_pytree(theta0)
    scales = ravel_pytree(jax.tree_util.tree_map(
        lambda a: jnp.full(a.shape, jnp.maximum(_rms(a), 1e-3), a.dtype), theta0))[0]

    def apply(theta, z):
        return unravel(ravel_pytree(theta)[0] + scales * z)
    return flat.size, apply


def parse(text: str) -> tuple[str, ...]:
    """`--subspace` text, e.g. "merge,gains", as a tuple of group names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names or any(n not in GROUPS for n in names):
        raise ConfigError(f"--subspace takes comma-separated groups from {', '.join(GROUPS)}; "
                          f"got {text!r}")
    if "all" in names and len(names) > 1:
        raise ConfigError("--subspace all already holds every coordinate; give it alone")
    if len(set(names)) != len(names):
        raise ConfigError(f"--subspace names a group twice: {text!r}")
    return names


def make(theta0: Theta, names: tuple[str, ...]) -> Subspace:
    """The subspace of `names` around theta0 (z is their coordinates, concatenated in order)."""
    theta0 = jax.tree_util.tree_map(jnp.asarray, theta0)
    parts = []
    for name in names:
        if name == "merge":
            parts.append(_merge(theta0))
        elif name == "gains":
            parts.append(_log_gains(MODULE_GAINS))
        elif name == "readout_scales":
            parts.append(_log_gains(READOUT_SCALES))
        elif name == "all":
            parts.append(_all(theta0))
        else:
            raise ConfigError(f"unknown subspace group {name!r}; choose from {', '.join(GROUPS)}")
    bounds = np.cumsum([0] + [d for d, _ in parts])

    def to_theta(z: jax.Array) -> Theta:
        theta = theta0
        for (_, apply), lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            theta = apply(theta, z[lo:hi])
        return theta
    return Subspace(names, int(bounds[-1]), to_theta)
