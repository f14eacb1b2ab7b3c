"""Process-wide JAX settings every entry point shares, and the pytree check they all use."""
from __future__ import annotations

import jax
import numpy as np


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs in $METARULE_CACHE/jax (default ~/.cache/metarule/jax).

    The rule's programs take tens of seconds to compile; with the cache a new process (a CLI
    command, a first `Embedder.fit`, a Ray actor or a restarted run) reads them from disk.
    A cache directory the user has set already is left as it is.
    """
    if jax.config.jax_compilation_cache_dir:
        return
    from metarule.data.cache import cache_root
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    # Many of the programs are small and quick, but a new actor or process repeats them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def all_finite(tree) -> bool:
    """Whether every leaf of a pytree of arrays is free of NaN and inf."""
    return all(bool(np.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(tree))
