"""Process-wide JAX settings every entry point shares, and the pytree check they all use."""
from __future__ import annotations

import contextlib
import signal
import threading

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


# ----------------------------------------------------------------------------- stopping

class Terminated(BaseException):
    """SIGTERM (a BaseException, like KeyboardInterrupt, so that no `except Exception` hides
    it)."""


class StopSignals:
    """SIGTERM and SIGINT while a command runs: the first one only records the request, which the
    long loops act on between their jitted chunks (`check_stop`), because an exception raised
    inside a signal handler can land in a JAX callback and be lost or crash the process; a
    second one of the same kind raises at once."""

    def __init__(self):
        self.received: int | None = None
        self.previous = {s: signal.signal(s, self._handler)
                         for s in (signal.SIGTERM, signal.SIGINT)}
        _ACTIVE.append(self)

    def _handler(self, signum, frame):
        if self.received == signum:
            raise _exception(signum)
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise _exception(self.received)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        _ACTIVE.remove(self)


_ACTIVE: list[StopSignals] = []


def _exception(signum) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def stop_signals():
    """StopSignals for the block, unless some are active already (the CLI's) or this is not the
    main thread (signals reach no other)."""
    if _ACTIVE or threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = StopSignals()
    try:
        yield
    finally:
        stop.restore()


def check_stop() -> None:
    """Raise Terminated or KeyboardInterrupt if a stop signal arrived (a safe point of a loop)."""
    for stop in _ACTIVE:
        stop.check()
