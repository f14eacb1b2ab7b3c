#!/usr/bin/env bash
# Install metarule (editable, with its test extra) and the offline data it reads, on a fresh
# Debian machine with Python >= 3.11. Run as root. Idempotent: when everything is already in
# place it prints nothing.
#   PYTHON  the interpreter to install into (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian marks its Python "externally managed" (PEP 668); this machine is dedicated to metarule.
export PIP_BREAK_SYSTEM_PACKAGES=1

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: metarule needs Python >= 3.11, $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi

apt_install() {
  echo "setup: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
"$PYTHON" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
# The README's commands say `python`; Debian only ships `python3` unless asked.
command -v python >/dev/null || apt_install python-is-python3

# Installed already? metarule importable from this checkout and every dependency that
# pyproject.toml lists (read afresh, so a newly added dependency triggers a reinstall).
if ! "$PYTHON" - 2>/dev/null <<'PY'
import importlib.metadata as md, pathlib, re, tomllib
import metarule
assert pathlib.Path(metarule.__file__).resolve().parent == pathlib.Path("metarule").resolve()
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
for req in project["dependencies"] + extras["test"] + extras["ray"] + extras["es"]:
    md.version(re.match(r"[A-Za-z0-9._-]+", req).group())
PY
then
  echo "setup: pip install -e .[test,ray,es] (jax CPU build from PyPI)"
  "$PYTHON" -m pip install -q -e ".[test,ray,es]"
fi

PYTHON="$PYTHON" bash scripts/setup_data.sh
