"""The test session compiles without JAX's persistent compilation cache. Subprocess tests kill
processes mid-run (kill -9); JAX writes a cache entry in place, so such a kill can leave one
half-written, and loading a bad entry crashed the reading process (a C++ exception in jaxlib's
executable loader). Subprocesses and Ray workers inherit the setting through the environment."""
import os

os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import jax  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)
