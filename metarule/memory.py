"""How much memory the rule needs on a base model, checked before any of it is allocated.

A base model far too wide for the machine otherwise runs for minutes and dies in XLA with an
out-of-memory traceback; the estimate refuses it at once, with one line naming both sizes.

The limit is the memory available now (MemAvailable of /proc/meminfo, capped by a cgroup v2
limit where there is one; else os.sysconf). $METARULE_MEMORY_LIMIT overrides it: bytes, or a
size such as 64G (K, M, G, T: powers of 1024), or inf to switch the check off -- the way to size
the check for an accelerator's own memory.
"""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

from metarule import rule
from metarule.config import ConfigError, RuleConfig

LIMIT_ENV = "METARULE_MEMORY_LIMIT"
FLOAT_BYTES = 4  # float32 everywhere
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


class MemoryLimitError(ConfigError):
    """A model or run whose estimated memory exceeds what the machine has available."""


def estimate_bytes(widths: tuple[int, ...], batch: int, cfg: RuleConfig, copies: int = 1) -> int:
    """Bytes of the arrays one application of the rule holds at its peak, from the shapes of
    rule.py; XLA's own count for the compiled update is within a factor of 2 of it
    (tests/test_memory.py), and where it is far too large for the machine, that is enough.

    Args:
      widths: N^0 .. N^L, the base model's unit counts, input and embedding included.
      batch: B, examples per unlabeled batch.
      cfg: the rule's config (H = h_size, D = delta_dims, C = grad_channels).
      copies: how many such applications run at once (the vmapped tasks of meta-training).
    """
    h, d, c = cfg.h_size, cfg.delta_dims, cfg.grad_channels
    pairs = [n_in * n_out for n_in, n_out in itertools.pairwise(widths)]
    # W and V before and after the step, Delta W for every layer, and the biases twice.
    params = 5 * sum(pairs) + 2 * sum(widths[1:])
    # The weight-update planes and the low-rank readouts of one layer: (N^{l-1}, N^l) each.
    planes = (len(rule.PLANES) + len(rule.READOUTS)) * max(pairs)
    # Every layer's h (B, N, H), x and z (B, N); then the widest layer's working set: the
    # convolutions' stacked taps (B, N, 3H) and output, d and delta (B, N, D), computeH's input
    # (B, N, 2 + D) and both sides' readouts (B, N, len(READOUTS), C).
    per_unit = sum(batch * n * (h + 2) for n in widths)
    working = batch * max(widths) * (4 * h + 3 * d + 2 + 2 * len(rule.READOUTS) * c)
    return FLOAT_BYTES * (params + copies * (planes + per_unit + working))


def parse_size(text: str) -> float:
    """'123', '8G', '1.5T' or 'inf' -> bytes."""
    text = text.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        value = float(text[:len(text) - len(unit)]) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ConfigError(f"${LIMIT_ENV} must be a size such as 8G, bytes or inf, got {text!r}")
    return value


def _cgroup_room() -> float:
    """Memory left under a cgroup v2 limit (a container's), inf where there is none."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return math.inf
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return math.inf


def available_bytes() -> tuple[float, str]:
    """(bytes the rule may use, where that number comes from)."""
    if override := os.environ.get(LIMIT_ENV):
        return parse_size(override), f"set by ${LIMIT_ENV}"
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        free, source = kib * 1024, "available"
    except (OSError, StopIteration, ValueError, IndexError):
        free, source = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free"
    return min(free, _cgroup_room()), source


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_fits(widths: tuple[int, ...], cfg: RuleConfig, what: str, copies: int = 1) -> None:
    """Raise MemoryLimitError, naming the estimate and the limit, if `what` -- the rule `cfg`
    on base models of `widths` and batches of cfg.inner_batch -- cannot fit.

    Call it before allocating the base model or the rule's state: it does no XLA work.
    """
    batch = cfg.inner_batch
    need = estimate_bytes(widths, batch, cfg, copies)
    limit, source = available_bytes()
    if need > limit:
        raise MemoryLimitError(
            f"{what} needs about {human(need)} of memory (widths {','.join(map(str, widths))}, "
            f"batch {batch}), more than the {human(limit)} {source}; use smaller widths, or set "
            f"${LIMIT_ENV} (e.g. 64G) to change the limit")
