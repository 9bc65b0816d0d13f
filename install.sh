#!/bin/sh
# Installs everything pkgdepot needs on a fresh Debian 12 machine (run as
# root, or with sudo available): the Debian packages, then a virtual
# environment in ./.venv built on Debian's /usr/bin/python3 with
# --system-site-packages (python3-solv and python3-apt come from Debian).
#   ./install.sh          what `pkgdepot serve` needs
#   ./install.sh --test   also the real clients and tools the test suite drives
set -eu
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
RUNTIME="python3 python3-venv python3-solv python3-apt python3-rpm gpgv gpg createrepo-c libarchive13 ca-certificates"
TEST="dpkg-dev apt-utils gpg rpm createrepo-c dnf zypper curl chromium python3-pil busybox-static"
PKGS="$RUNTIME"
EXTRA=""
if [ "${1:-}" = "--test" ]; then
    PKGS="$RUNTIME $TEST"
    EXTRA="[test]"
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
# editable, as a plain path entry ("compat"): the checkout is what runs, and
# no import hook is loaded at every start (setuptools' default editable
# finder costs each `pkgdepot` command 13 ms)
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$EXTRA" \
    --config-settings editable_mode=compat
