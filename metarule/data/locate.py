"""Finding data files inside installed packages, never by hard-coded absolute paths."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from pathlib import Path

from metarule.data.core import DataError


def pip_file(dist: str, relpath: str, install: str) -> Path:
    """A file shipped by the pip distribution `dist` (located via its metadata, not by import)."""
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(relpath))
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"{dist} is not installed; install it with: {install}") from None
    if not path.is_file():
        raise DataError(f"{dist} is installed but lacks {relpath}; reinstall it with: {install}")
    return path


def module_dir(module: str, install: str) -> Path:
    """The directory of an importable package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{module} is not installed; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def dpkg_files(package: str) -> list[Path]:
    """The regular files a Debian package installed, or [] when it (or dpkg) is absent."""
    if shutil.which("dpkg") is None:
        return []
    out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return [Path(p) for p in out.stdout.splitlines() if Path(p).is_file()]


def dpkg_file(package: str, basename: str) -> Path:
    """The one file called `basename` installed by a Debian package."""
    for path in dpkg_files(package):
        if path.name == basename:
            return path
    raise DataError(f"{basename} not found; install it with: apt-get install -y {package}")
